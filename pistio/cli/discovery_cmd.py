"""``pistio discovery``: the control plane (istiod's Pilot) serving a config directory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import click

log = logging.getLogger("pistio.discovery")


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` → (host, port); port 0 = any free port."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address or "127.0.0.1", default_port
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"invalid port in {address!r}")
    return host, int(port)


def _grpc_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _IstioFormatter(logging.Formatter):
    """Istio's log lines: ``<UTC time>\t<level>\t<scope>\t<message>``, levels in lower case."""

    converter = time.gmtime
    _LEVELS = {"WARNING": "warn", "CRITICAL": "fatal"}

    def format(self, record: logging.LogRecord) -> str:
        record.levelname = self._LEVELS.get(record.levelname, record.levelname.lower())
        return super().format(record)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _IstioFormatter(
            "%(asctime)s.%(msecs)03dZ\t%(levelname)s\t%(name)s\t%(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _write_ready_file(path: Path, info: dict[str, object]) -> None:
    # Written aside and renamed: a reader never sees half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info) + "\n")
    tmp.replace(path)


async def _serve(
    config_dir: Path,
    mesh: Path | None,
    grpc_addr: str,
    http_addr: str,
    ready_file: Path | None,
    domain: str,
    secure_addr: str = "",
    ca_options=None,  # type: ignore[no-untyped-def]
) -> None:
    from pistio.pilot.debug_server import DebugServer
    from pistio.pilot.discovery import Discovery

    discovery = Discovery(config_dir, mesh_file=mesh, domain_suffix=domain,
                          ca_options=ca_options)
    debug = DebugServer(discovery)
    grpc_host, grpc_port = split_address(grpc_addr, 15010)
    http_host, http_port = split_address(http_addr, 15014)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    secure_target = ""
    if secure_addr:
        secure_host, secure_port = split_address(secure_addr, 15012)
        secure_target = _grpc_target(secure_host, secure_port)
    try:
        try:
            xds_port = await discovery.start(_grpc_target(grpc_host, grpc_port), secure_target)
        except RuntimeError as err:
            where = f"{grpc_addr} or {secure_addr}" if secure_addr else grpc_addr
            raise click.ClickException(f"cannot listen for xDS on {where}: {err}") from None
        try:
            debug_port = await debug.start(http_host, http_port)
        except OSError as err:
            raise click.ClickException(
                f"cannot listen for debug HTTP on {http_addr}: {err.strerror or err}"
            ) from None
        log.info(
            "pistio discovery ready: xDS (ADS) on %s:%d, monitoring and debug HTTP on %s:%d, "
            "config from %s",
            grpc_host,
            xds_port,
            http_host,
            debug_port,
            config_dir,
        )
        if discovery.secure is not None:
            log.info("xDS and CA over TLS on %s:%d", secure_host, discovery.secure.port)
        if ready_file is not None:
            info: dict[str, object] = {
                "pid": os.getpid(),
                "grpc_address": f"{grpc_host}:{xds_port}",
                "grpc_port": xds_port,
                "http_address": f"{http_host}:{debug_port}",
                "http_port": debug_port,
            }
            if discovery.secure is not None:
                info["secure_grpc_address"] = f"{secure_host}:{discovery.secure.port}"
                info["secure_grpc_port"] = discovery.secure.port
            _write_ready_file(ready_file, info)
        await stop.wait()
        log.info("pistio discovery shutting down")
    finally:
        await debug.stop()
        await discovery.stop()
        if ready_file is not None:
            with contextlib.suppress(OSError):
                ready_file.unlink()


@click.command()
@click.option(
    "--config-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory (or file) of Kubernetes and Istio YAML to serve; watched for changes.",
)
@click.option(
    "--mesh",
    "mesh_file",
    type=click.Path(path_type=Path),
    default=None,
    help="MeshConfig file (bare YAML or the istio ConfigMap); defaults to Istio's defaults.",
)
@click.option(
    "--grpc-addr",
    default="127.0.0.1:15010",
    show_default=True,
    help="Plaintext xDS (ADS) address; port 0 picks a free port.",
)
@click.option(
    "--http-addr",
    default="127.0.0.1:15014",
    show_default=True,
    help="Monitoring and debug HTTP address (/metrics, /debug/syncz, /debug/config_dump).",
)
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the bound addresses here as JSON once serving (useful with port 0).",
)
@click.option("--domain", default="cluster.local", show_default=True, help="DNS domain suffix.")
@click.option(
    "--secure-grpc-addr",
    default="",
    help="xDS and CA over TLS (istiod's 15012, e.g. 127.0.0.1:15012); enables the CA.",
)
@click.option(
    "--ca-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the self-signed root CA is created and kept (in memory only if unset).",
)
@click.option(
    "--cacerts",
    "cacerts_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Istio's plug-in CA directory: ca-cert.pem, ca-key.pem, cert-chain.pem, "
    "root-cert.pem (reloaded when they change).",
)
@click.option(
    "--token-jwks",
    type=click.Path(path_type=Path),
    default=None,
    help="JWKS file of the keys pod tokens are signed with (callers of the CA).",
)
@click.option(
    "--workload-cert-ttl",
    default="24h",
    show_default=True,
    help="Default workload certificate lifetime (Go duration).",
)
@click.option(
    "--max-workload-cert-ttl",
    default="2160h",
    show_default=True,
    help="Longest workload certificate lifetime a caller may ask for (Go duration).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def discovery(
    config_dir: Path,
    mesh_file: Path | None,
    grpc_addr: str,
    http_addr: str,
    ready_file: Path | None,
    domain: str,
    secure_grpc_addr: str,
    ca_dir: Path | None,
    cacerts_dir: Path | None,
    token_jwks: Path | None,
    workload_cert_ttl: str,
    max_workload_cert_ttl: str,
    log_level: str,
) -> None:
    """Run the control plane: serve xDS to proxies from a directory of config (istiod)."""
    from pistio.security.istiod import CaOptions
    from pistio.security.pki import parse_duration

    if not config_dir.exists():
        raise click.ClickException(f"config directory {config_dir} does not exist")
    if mesh_file is not None and not mesh_file.is_file():
        raise click.ClickException(f"mesh config file {mesh_file} does not exist")
    ttls = {}
    for name, value in (("--workload-cert-ttl", workload_cert_ttl),
                        ("--max-workload-cert-ttl", max_workload_cert_ttl)):
        try:
            ttls[name] = parse_duration(value)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint=name) from None
        if ttls[name] <= 0:
            raise click.BadParameter("must be positive", param_hint=name)
    ca_options = CaOptions(ca_dir=ca_dir, cacerts_dir=cacerts_dir, token_jwks=token_jwks,
                           workload_cert_ttl=ttls["--workload-cert-ttl"],
                           max_workload_cert_ttl=ttls["--max-workload-cert-ttl"])
    configure_logging(log_level)
    try:
        asyncio.run(_serve(config_dir, mesh_file, grpc_addr, http_addr, ready_file, domain,
                           secure_grpc_addr, ca_options))
    except ValueError as err:  # an invalid mesh config or CA files at startup
        raise click.ClickException(str(err)) from None
