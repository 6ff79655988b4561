"""The discovery's mesh config from the ``istio`` ConfigMap (istio-system), as istiod reads
it without a mesh file: applied over the defaults, reloaded with a full push, an invalid
one rejected while the last good one stays."""

from __future__ import annotations

import logging
from pathlib import Path

from pistio.pilot.discovery import Discovery
from pistio.xds.push_request import PushRequest


def config_map(mesh: str, name: str = "istio", namespace: str = "istio-system") -> str:
    body = "".join(f"    {line}\n" for line in mesh.splitlines())
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
            f"  namespace: {namespace}\ndata:\n  mesh: |\n{body}")


def discovery(tmp_path: Path, **kwargs) -> tuple[Discovery, list[PushRequest]]:
    d = Discovery(tmp_path, **kwargs)
    d.load()
    pushed: list[PushRequest] = []
    d.server.config_update = pushed.append  # type: ignore[method-assign]
    return d, pushed


def test_config_map_applies_over_the_defaults_and_reloads(tmp_path: Path) -> None:
    cm = tmp_path / "istio.yaml"
    cm.write_text(config_map("accessLogFile: /dev/stdout\nenableTracing: false\n"))
    d, pushed = discovery(tmp_path)
    assert d.mesh.access_log_file == "/dev/stdout"
    assert d.mesh.enable_tracing is False
    assert d.mesh.root_namespace == "istio-system"  # defaults fill the rest
    assert d.mesh.default_providers is not None
    assert d.mesh.default_providers.metrics == ["prometheus"]

    cm.write_text(config_map("accessLogFile: /tmp/access.log\naccessLogEncoding: JSON\n"))
    d.on_config_change(d.store.reload())
    assert (d.mesh.access_log_file, d.mesh.access_log_encoding) == ("/tmp/access.log", "JSON")
    assert d.mesh.enable_tracing is True  # back to the default
    (request,) = pushed
    assert request.full and request.reasons == frozenset({"global"})
    # The next push context is built from the new mesh config.
    assert d.build_push_context().mesh.access_log_file == "/tmp/access.log"


def test_invalid_config_map_keeps_the_last_good_mesh(tmp_path: Path, caplog) -> None:
    cm = tmp_path / "istio.yaml"
    cm.write_text(config_map("accessLogFile: /dev/stdout\n"))
    d, pushed = discovery(tmp_path)
    cm.write_text(config_map("accessLogEncoding: XML\n"))
    with caplog.at_level(logging.ERROR, logger="pistio.discovery"):
        d.on_config_change(d.store.reload())
    assert d.mesh.access_log_file == "/dev/stdout"
    assert not pushed
    assert any("ConfigMap istio-system/istio data.mesh rejected" in r.message
               for r in caplog.records)
    # Fixed again: applied.
    cm.write_text(config_map("accessLogFile: /dev/stderr\n"))
    d.on_config_change(d.store.reload())
    assert d.mesh.access_log_file == "/dev/stderr" and len(pushed) == 1


def test_deleted_config_map_means_the_defaults(tmp_path: Path) -> None:
    cm = tmp_path / "istio.yaml"
    cm.write_text(config_map("accessLogFile: /dev/stdout\n"))
    d, pushed = discovery(tmp_path)
    cm.unlink()
    d.on_config_change(d.store.reload())
    assert d.mesh.access_log_file == "" and len(pushed) == 1


def test_other_config_maps_are_not_the_mesh_config(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        config_map("accessLogFile: /a\n", namespace="default")
        + "---\n" + config_map("accessLogFile: /b\n", name="istio-sidecar-injector"))
    d, pushed = discovery(tmp_path)
    assert d.mesh.access_log_file == ""
    (tmp_path / "a.yaml").write_text(config_map("accessLogFile: /c\n", namespace="default"))
    d.on_config_change(d.store.reload())
    assert d.mesh.access_log_file == "" and not pushed


def test_a_mesh_file_wins_over_the_config_map(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "istio.yaml").write_text(config_map("accessLogFile: /from-config-map\n"))
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text("accessLogFile: /from-file\n")
    d, _ = discovery(config, mesh_file=mesh_file)
    assert d.mesh.access_log_file == "/from-file"
