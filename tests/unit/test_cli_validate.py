"""``pistio validate`` as a user runs it: a real process, its output and exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PISTIO = [sys.executable, "-m", "pistio.cli"]
SHARED = Path(os.environ.get("PISTIO_SHARED", Path(__file__).resolve().parents[3] / "shared"))

VALID_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*PISTIO, *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def assert_clean_failure(proc: subprocess.CompletedProcess[str], reason: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert reason in proc.stderr, proc.stderr
    for line in proc.stderr.splitlines():
        assert line.startswith(("Error:", "Warning:")), line


def test_valid_file_prints_a_line_per_resource(tmp_path: Path) -> None:
    f = tmp_path / "vs.yaml"
    f.write_text(VALID_VS + "---\n" + VALID_VS.replace("name: reviews", "name: reviews2"))
    proc = run("validate", "-f", str(f))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"validated VirtualService default/reviews ({f}:1)",
        f"validated VirtualService default/reviews2 ({f}:12)",
    ]


def test_stdin() -> None:
    proc = run("validate", "-f", "-", stdin=VALID_VS.encode())
    assert proc.returncode == 0, proc.stderr
    assert "validated VirtualService default/reviews (-:1)" in proc.stdout


def test_errors_name_resource_path_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(VALID_VS.replace("subset: v1}", "subset: v1}\n      weight: -1\n      bogus: 1"))
    proc = run("validate", "-f", str(f))
    assert_clean_failure(proc, "VirtualService default/reviews")
    assert f"{f}:12: VirtualService default/reviews: spec.http[0].route[0].bogus: unknown field" in proc.stderr


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this: is: not: yaml: [", "invalid YAML"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary"),
        (b"", "no resources found"),
        (b"---\n---\n", "no resources found"),
        (b"just a string\n", "must be a mapping"),
        (b"[" * 50_000, "nest"),
        (b"apiVersion: v1\nkind: Namespace\nkind: Namespace\n", 'duplicate key "kind"'),
        (b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [1]\n", "metadata.name: invalid type"),
        (b"apiVersion: v9\nkind: Frobnicator\nmetadata: {name: x}\n", 'no matches for kind "Frobnicator"'),
        (b"kind: Namespace\nmetadata: {name: x}\n", "apiVersion is required"),
        (b"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec: 5\n", "spec: invalid type"),
        (b"\xff\xfe\x00b", "binary"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, content: bytes, reason: str) -> None:
    f = tmp_path / "in.yaml"
    f.write_bytes(content)
    assert_clean_failure(run("validate", "-f", str(f)), reason)


def test_huge_input(tmp_path: Path) -> None:
    f = tmp_path / "huge.yaml"
    with f.open("wb") as fh:
        fh.write(b"a: '")
        fh.write(b"x" * (33 * 1024 * 1024))
        fh.write(b"'\n")
    assert_clean_failure(run("validate", "-f", str(f)), "larger than")


def test_missing_file_and_usage() -> None:
    assert_clean_failure(run("validate", "-f", "/nonexistent/x.yaml"), "no such file")
    proc = run("validate")
    assert proc.returncode == 2 and "Missing option" in proc.stderr


def test_directory_reports_every_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID_VS)
    (tmp_path / "b.yml").write_text("a: [\n")
    (tmp_path / "c.json").write_text('{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Bad_Name"}}')
    (tmp_path / "ignored.txt").write_text("not config")
    proc = run("validate", "-f", str(tmp_path))
    assert_clean_failure(proc, "b.yml")
    assert "Namespace Bad_Name: metadata.name" in proc.stderr
    assert "validated VirtualService default/reviews" in proc.stdout


def test_bookinfo_samples_are_valid() -> None:
    samples = SHARED / "conformance" / "istio-samples" / "bookinfo-networking"
    assert samples.is_dir(), f"{samples} is absent: Istio's Bookinfo samples cannot be checked"
    proc = run("validate", "-f", str(samples))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("validated ") == 38
