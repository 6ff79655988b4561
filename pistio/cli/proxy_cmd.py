"""``pistio proxy sidecar|router``: pilot-agent and the Envoy-compatible proxy in one process
tree. The agent connects to discovery over ADS, compiles and applies (or NACKs) the config,
serves the listeners itself as worker 0 and keeps ``--concurrency`` - 1 more worker processes on
the same snapshot (``--concurrency 1``: one process, as Envoy). The agent also serves the admin API (15000), the Prometheus stats (15090), the health port
(15021) and the status port (15020: application probes from ``ISTIO_KUBE_APP_PROBERS``,
``/healthz/ready``). See docs/proxy.md."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from pistio.cli.discovery_cmd import (
    _grpc_target,
    _write_ready_file,
    configure_logging,
    split_address,
)

log = logging.getLogger("pistio.proxy")

# Istio's proxyConfig.drainDuration, which pilot-agent passes as Envoy's --drain-time-s.
DEFAULT_DRAIN_TIME = 45.0

# Envoy's ADS retry back-off: 500 ms doubling up to 30 s, with jitter.
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0


def _cluster_statuses(manager):  # type: ignore[no-untyped-def]
    """``/clusters`` from the agent's snapshot: config and endpoints (per-worker host
    counters are not merged yet)."""
    from pistio.proxy.admin.clusters import ClusterStatus, HostStatus, Thresholds

    for name, active in sorted(manager.snapshot.clusters.items()):
        cb = active.config.circuit_breakers
        status = ClusterStatus(
            name=name,
            observability_name=active.config.stat_name,
            eds_service_name=active.config.eds_service_name or "",
            default_priority=Thresholds(cb.max_connections, cb.max_pending_requests,
                                        cb.max_requests, cb.max_retries),
        )
        assignment = active.assignment
        if assignment is not None:
            for host_set in assignment.priorities:
                for group in host_set.localities:
                    for ep in group.endpoints:
                        status.hosts.append(HostStatus(
                            ep.address, ep.port, weight=ep.weight, priority=ep.priority,
                            hostname=ep.hostname,
                            health_flags=() if ep.eds_healthy else ("failed_eds_health",),
                        ))
        yield status


def _xds_channel(target: str, root_cert: Path | None, token_file: Path | None):  # type: ignore[no-untyped-def]
    """ADS over TLS (istiod's 15012): the discovery's root, the pod token per call."""
    import grpc

    from pistio.security.ca_client import _default_server_name
    from pistio.xds.client import CHANNEL_OPTIONS

    roots = root_cert.read_bytes() if root_cert else None
    creds = grpc.ssl_channel_credentials(roots)
    if token_file is not None:
        def token(context, callback):  # type: ignore[no-untyped-def]
            try:
                callback((("authorization", f"Bearer {token_file.read_text().strip()}"),), None)
            except OSError as exc:
                callback((), exc)

        creds = grpc.composite_channel_credentials(creds, grpc.metadata_call_credentials(token))
    options = list(CHANNEL_OPTIONS)
    if name := _default_server_name(target):
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.aio.secure_channel(target, creds, options=options)


async def _run(identity, target: str, concurrency: int, delta: bool, log_level: str,
               ports: dict[str, int], ready_file: Path | None, app_probers=None,
               secret_options=None, xds_tls: bool = False,
               drain_time: float = DEFAULT_DRAIN_TIME) -> None:
    from pistio.agent.app_health import AppHealthServer
    from pistio.agent.config_dump import config_dump_json
    from pistio.agent.config_manager import ConfigManager
    from pistio.agent.health import HealthServer, proxy_readiness
    from pistio.agent.worker_feed import WorkerFeed
    from pistio.proxy.admin.prometheus_port import PrometheusServer
    from pistio.proxy.admin.server import AdminServer
    from pistio.proxy.admin.server_state import ServerState
    from pistio.proxy.runtime.data_plane import DataPlane
    from pistio.proxy.server.stats_channel import STATS_DIR_ENV, collect_worker_stats
    from pistio.xds.client import AdsClient

    secrets = None
    channel = None
    if secret_options is not None:
        from pistio.agent.secrets import SecretManager

        secrets = SecretManager(secret_options)
        if xds_tls:
            channel = _xds_channel(target, secret_options.root_cert, secret_options.token_file)
    client = AdsClient(
        target, identity.node_id, delta=delta, cluster=identity.service_cluster,
        metadata=identity.metadata(), backoff_initial=BACKOFF_INITIAL, backoff_max=BACKOFF_MAX,
        channel=channel,
    )
    client.node.CopyFrom(identity.node())
    manager = ConfigManager(client)
    # The SDS source of the proxy (`default`, `ROOTCA`): None without a CA.
    manager.secrets = secrets
    # Workers inherit the environment: each serves its stats on a socket in this directory.
    stats_dir = tempfile.mkdtemp(prefix="pistio-proxy-stats-")
    os.environ[STATS_DIR_ENV] = stats_dir
    # ... and know their node (Istio's peer metadata and stats labels).
    from pistio.proxy.telemetry.peer_metadata import NODE_METADATA_ENV, node_metadata_env

    os.environ[NODE_METADATA_ENV] = node_metadata_env(identity.node_id, identity.metadata())
    # ... and read the node's identity for span tags and the tracer's service name.
    from pistio.proxy.tracing.node import node_environment

    os.environ.update(node_environment(
        identity.node_id, identity.service_cluster, identity.locality[1],
        identity.ip_addresses[0] if identity.ip_addresses else ""))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Worker 0 is this process, on the snapshots the manager publishes; the others are fed.
    data_plane = DataPlane(loop, manager.holder, worker_id=0)
    if concurrency > 1:  # one token bucket per rate limit for all processes, as in Envoy
        from pistio.proxy.runtime import shared_buckets

        shared_buckets.install(shared_buckets.SharedBuckets.create())
    feed = WorkerFeed(manager, concurrency - 1, log_level=log_level, first_id=1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    state = ServerState(lambda: manager.initialized, node_id=identity.node_id,
                        node_cluster=identity.service_cluster, concurrency=concurrency)
    admin = AdminServer(
        state,
        stats=lambda: collect_worker_stats(stats_dir),
        config_dump=lambda: config_dump_json(manager),
        clusters=lambda: _cluster_statuses(manager),
        on_quit=stop.set,
        on_drain_listeners=lambda inbound, graceful: _drain_listeners(
            (data_plane.drain_listeners, feed.drain_listeners), inbound, graceful, drain_time),
    )
    prometheus = PrometheusServer(admin)
    readiness = proxy_readiness(lambda: manager.initialized, state)
    health = HealthServer(readiness)
    merger = _metrics_merger(admin)
    status = AppHealthServer(app_probers or {}, readiness=readiness,
                             pod_ip=identity.ip_addresses[0] if identity.ip_addresses else None,
                             metrics=merger.handle)
    log.info("pistio proxy %s starting: node %s, discovery %s, %d worker(s)",
             identity.node_type, identity.node_id, target, concurrency)
    started: list = []
    try:
        await data_plane.serve_stats(stats_dir)
        await feed.start()
        admin_addr = await admin.start(port=ports["admin"])
        started.append(admin)
        prom_addr = await prometheus.start(port=ports["prometheus"])
        started.append(prometheus)
        health_addr = await health.start(port=ports["health"])
        started.append(health)
        status_port: int | None = None
        try:
            status_port = (await status.start(port=ports["status"]))[1]
            started.append(status)
        except OSError as exc:
            # As Istio's agent: the proxy keeps running without its status port.
            log.error("Error listening on status port %d: %s", ports["status"], exc)
        if secrets is not None:
            await secrets.start()  # Istio's agent has the certificate before Envoy asks
        await manager.start()
        if ready_file is not None:
            _write_ready_file(ready_file, {
                "admin": admin_addr[1], "prometheus": prom_addr[1], "health": health_addr[1],
                "status": status_port, "pid": os.getpid(),
            })
        await stop.wait()
        log.info("pistio proxy shutting down")
    finally:
        for server in reversed(started):
            await server.close()
        await manager.stop()
        data_plane.close()
        if secrets is not None:
            await secrets.close()
        if channel is not None:
            await channel.close()
        await feed.stop()
        shutil.rmtree(stats_dir, ignore_errors=True)
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)


def _drain_listeners(targets: Iterable[Callable[[bool, bool, float], None]],
                     inbound_only: bool, graceful: bool, drain_time: float) -> None:
    log.info("draining %s listeners%s", "inbound" if inbound_only else "all",
             f" over {drain_time:g}s" if graceful else "")
    for drain in targets:
        drain(inbound_only, graceful, drain_time)


def _metrics_merger(admin):  # type: ignore[no-untyped-def]
    """15020 ``/stats/prometheus``: agent + proxy + the app's metrics (Istio's merge)."""
    from pistio.agent.metrics_merge import (
        PROMETHEUS_ANNOTATIONS_ENV,
        MetricsMerger,
        parse_prometheus_annotations,
    )
    from pistio.proxy.stats.prometheus import render_prometheus

    try:
        app = parse_prometheus_annotations(os.environ.get(PROMETHEUS_ANNOTATIONS_ENV))
    except ValueError as exc:
        log.error("%s: %s; application metrics are not merged", PROMETHEUS_ANNOTATIONS_ENV, exc)
        app = None

    async def proxy_metrics() -> str:
        return render_prometheus(await admin.snapshot())

    return MetricsMerger(proxy_metrics, app)


@click.command()
@click.argument("proxy_type", type=click.Choice(["sidecar", "router"]))
@click.option("--discovery-address", default="istiod.istio-system.svc:15010",
              show_default=True, help="Discovery (istiod) xDS address, HOST:PORT.")
@click.option("--concurrency", type=int, default=2, show_default=True,
              help="Workers: the agent process and N-1 more (0: one per CPU), as Istio's proxy "
                   "concurrency.")
@click.option("--node-id", default=None, help="Override the xDS node id.")
@click.option("--pod", default=None, help="Pod name (default: $POD_NAME, then hostname).")
@click.option("--namespace", default=None, help="Namespace (default: $POD_NAMESPACE).")
@click.option("--ip", default=None, help="Instance IP(s), comma separated ($INSTANCE_IP).")
@click.option("--cluster-id", default=None, help="Cluster id (default: Kubernetes).")
@click.option("--service-account", default=None, help="Service account ($SERVICE_ACCOUNT).")
@click.option("--label", "labels", multiple=True, help="Pod label KEY=VALUE (repeatable).")
@click.option("--locality", default=None, help="region/zone/subzone of this proxy.")
@click.option("--admin-port", type=int, default=15000, show_default=True,
              help="Admin API port on 127.0.0.1 (0: any free port).")
@click.option("--prometheus-port", type=int, default=15090, show_default=True,
              help="Prometheus stats port (/stats/prometheus; 0: any free port).")
@click.option("--health-port", type=int, default=15021, show_default=True,
              help="Health port (/healthz/ready; 0: any free port).")
@click.option("--status-port", type=int, default=15020, show_default=True,
              help="Status port: /app-health/<container>/readyz|livez|startupz from "
                   "$ISTIO_KUBE_APP_PROBERS, /healthz/ready (0: any free port).")
@click.option("--ready-file", type=click.Path(path_type=Path), default=None,
              help="Write the admin, Prometheus and health ports here (JSON) once serving.")
@click.option("--delta/--sotw", default=False, show_default=True,
              help="Delta or state-of-the-world xDS.")
@click.option("--ca-address", default=None,
              help="Istio CA (IstioCertificateService) address, HOST:PORT ($CA_ADDR); enables "
                   "workload certificates (SDS `default` and `ROOTCA`).")
@click.option("--ca-root-cert", type=click.Path(path_type=Path, readable=False), default=None,
              help="Root certificate(s) to trust for the CA and TLS xDS ($CA_ROOT_CA).")
@click.option("--token-file", type=click.Path(path_type=Path, readable=False), default=None,
              help="Pod token presented to the CA (Kubernetes' istio-token).")
@click.option("--xds-tls/--xds-plaintext", default=None,
              help="xDS over TLS with the CA's root and the token (default: when the discovery "
                   "port is 15012 and a CA is configured).")
@click.option("--drain-time-s", "drain_time", type=click.FloatRange(min=0),
              default=DEFAULT_DRAIN_TIME, show_default=True,
              help="Seconds a graceful /drain_listeners drains before the listeners stop "
                   "(Envoy's --drain-time-s; Istio's proxyConfig.drainDuration).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def proxy(
    proxy_type: str, discovery_address: str, concurrency: int, node_id: str | None,
    pod: str | None, namespace: str | None, ip: str | None, cluster_id: str | None,
    service_account: str | None, labels: tuple[str, ...], locality: str | None,
    admin_port: int, prometheus_port: int, health_port: int, status_port: int,
    ready_file: Path | None,
    delta: bool, ca_address: str | None, ca_root_cert: Path | None, token_file: Path | None,
    xds_tls: bool | None, drain_time: float, log_level: str,
) -> None:
    """Run the proxy (pilot-agent + Envoy): fetch config over ADS, apply it, serve traffic."""
    from pistio.agent.app_health import PROBERS_ENV, parse_app_probers
    from pistio.agent.bootstrap import node_identity

    parsed_labels = None
    if labels:
        parsed_labels = {}
        for item in labels:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--label")
            parsed_labels[key] = value
    if concurrency < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--concurrency")
    workers = concurrency or os.cpu_count() or 1
    try:  # Istio's agent refuses to start on malformed probers
        app_probers = parse_app_probers(os.environ.get(PROBERS_ENV))
    except ValueError as exc:
        raise click.ClickException(f"{PROBERS_ENV}: {exc}") from None
    host, port = split_address(discovery_address, 15010)
    identity = node_identity(
        proxy_type, pod=pod, namespace=namespace, ip=ip, node_id=node_id,
        cluster_id=cluster_id, service_account=service_account, labels=parsed_labels,
        locality=locality,
    )
    secret_options = None
    if ca_address or os.environ.get("CA_ADDR"):
        from pistio.agent.secrets import SecretOptions

        try:
            secret_options = SecretOptions.from_env(
                namespace=identity.namespace, service_account=identity.service_account,
                ca_address=ca_address, root_cert=ca_root_cert, token_file=token_file,
                cluster_id=identity.cluster_id)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    configure_logging(log_level)
    # The agent serves traffic too (worker 0): uvloop, under gRPC's asyncio client as well.
    ports = {"admin": admin_port, "prometheus": prometheus_port, "health": health_port,
             "status": status_port}
    # As Istio's agent: xDS on istiod's 15012 is TLS (with the CA's root and the token).
    if xds_tls is None:
        xds_tls = secret_options is not None and port == 15012
    elif xds_tls and secret_options is None:
        raise click.ClickException("--xds-tls needs the CA settings (--ca-address, "
                                   "--ca-root-cert, --token-file)")
    import uvloop

    uvloop.run(_run(identity, _grpc_target(host, port), workers, delta, log_level, ports,
                    ready_file, app_probers, secret_options, xds_tls, drain_time))
