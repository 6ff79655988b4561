"""``pistio analyze``: output forms, thresholds, suppression, namespaces and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from pistio.cli.main import cli

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
"""
SVC = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: default
spec:
  selector: {app: reviews}
  ports:
  - port: 9080
    name: foo
"""


def run(tmp_path: Path, *args: str, files: dict[str, str] | None = None):
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    return CliRunner().invoke(cli, ["analyze", *args], catch_exceptions=False)


def test_missing_host_is_reported_as_istioctl_prints_it(tmp_path: Path) -> None:
    res = run(tmp_path, str(tmp_path / "vs.yaml"), files={"vs.yaml": VS})
    assert res.exit_code == 79
    line = f"Error [IST0101] (VirtualService default/reviews {tmp_path / 'vs.yaml'}:11) "
    assert line + 'Referenced host not found: "reviews"' in res.stdout


def test_json_form_has_istioctl_fields(tmp_path: Path) -> None:
    res = run(tmp_path, "-o", "json", str(tmp_path / "vs.yaml"), files={"vs.yaml": VS})
    messages = json.loads(res.stdout)
    assert messages == [
        {
            "code": "IST0101",
            "level": "Error",
            "origin": "VirtualService default/reviews",
            "reference": f"{tmp_path / 'vs.yaml'}:11",
            "message": 'Referenced host not found: "reviews"',
            "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/",
        }
    ]


def test_yaml_form(tmp_path: Path) -> None:
    res = run(tmp_path, "-o", "yaml", str(tmp_path / "vs.yaml"), files={"vs.yaml": VS})
    assert yaml.safe_load(res.stdout)[0]["code"] == "IST0101"


def test_clean_input_exits_zero(tmp_path: Path) -> None:
    res = run(
        tmp_path, str(tmp_path), files={"vs.yaml": VS, "svc.yaml": SVC.replace("foo", "http")}
    )
    assert res.exit_code == 0, res.output
    assert "No validation issues found" in res.stderr


def test_thresholds(tmp_path: Path) -> None:
    files = {"vs.yaml": VS, "svc.yaml": SVC}  # the port name gives an Info message
    res = run(tmp_path, str(tmp_path), files=files)
    assert res.exit_code == 0
    assert "Info [IST0118]" in res.stdout
    res = run(tmp_path, "--failure-threshold", "Info", str(tmp_path))
    assert res.exit_code == 79
    res = run(tmp_path, "--output-threshold", "Warning", str(tmp_path))
    assert "IST0118" not in res.stdout


def test_suppress_by_code_and_resource(tmp_path: Path) -> None:
    files = {"vs.yaml": VS}
    res = run(tmp_path, "-S", "IST0101=VirtualService default/*", str(tmp_path), files=files)
    assert res.exit_code == 0
    res = run(tmp_path, "-S", "IST0101=VirtualService reviews.default", str(tmp_path))
    assert res.exit_code == 0
    res = run(tmp_path, "-S", "IST0102=VirtualService *", str(tmp_path))
    assert res.exit_code == 79


def test_suppress_annotation(tmp_path: Path) -> None:
    annotated = VS.replace(
        "  namespace: default\n",
        "  namespace: default\n  annotations:\n    galley.istio.io/analyze-suppress: IST0101\n",
    )
    res = run(tmp_path, str(tmp_path / "vs.yaml"), files={"vs.yaml": annotated})
    assert res.exit_code == 0, res.stdout


def test_namespace_filter(tmp_path: Path) -> None:
    res = run(tmp_path, "-n", "other", str(tmp_path / "vs.yaml"), files={"vs.yaml": VS})
    assert res.exit_code == 0
    res = run(tmp_path, "-n", "default", str(tmp_path / "vs.yaml"))
    assert res.exit_code == 79


def test_analyzer_selection(tmp_path: Path) -> None:
    files = {"vs.yaml": VS, "svc.yaml": SVC}
    res = run(
        tmp_path, "--analyzer", "service.PortNameAnalyzer", "-o", "json", str(tmp_path), files=files
    )
    assert [m["code"] for m in json.loads(res.stdout)] == ["IST0118"]


def test_schema_errors_are_ist0106(tmp_path: Path) -> None:
    bad = VS.replace("host: reviews\n", "host: reviews\n      weight: -1\n")
    res = run(tmp_path, "-o", "json", str(tmp_path / "vs.yaml"), files={"vs.yaml": bad})
    codes = [m["code"] for m in json.loads(res.stdout)]
    assert "IST0106" in codes
    assert res.exit_code == 79


def test_unparseable_input_exits_65(tmp_path: Path) -> None:
    res = run(tmp_path, str(tmp_path / "bad.yaml"), files={"bad.yaml": "a: [\n"})
    assert res.exit_code == 65


def test_missing_file_exits_65(tmp_path: Path) -> None:
    res = run(tmp_path, str(tmp_path / "nope.yaml"))
    assert res.exit_code == 65


def test_usage_errors_exit_64(tmp_path: Path) -> None:
    assert run(tmp_path, "--analyzer", "no.SuchAnalyzer", str(tmp_path)).exit_code == 64
    assert run(tmp_path, "--failure-threshold", "Fatal", str(tmp_path)).exit_code == 64
    assert run(tmp_path, "-S", "IST0101", str(tmp_path)).exit_code == 64
    assert run(tmp_path, "--bogus-flag").exit_code == 64
    assert run(tmp_path).exit_code == 64


def test_list_analyzers(tmp_path: Path) -> None:
    res = run(tmp_path, "--list-analyzers")
    assert res.exit_code == 0
    for name in (
        "virtualservice.DestinationHostAnalyzer",
        "annotations.AlphaAnalyzer",
        "schema.ValidationAnalyzer.VirtualService",
        "gateway.ConflictingGatewayAnalyzer",
    ):
        assert f"* {name}:" in res.stdout
