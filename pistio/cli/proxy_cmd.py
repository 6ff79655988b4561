"""``pistio proxy sidecar|router``: pilot-agent and the Envoy-compatible proxy in one process
tree. Today: connect to discovery over ADS, compile and apply (or NACK) the config, keep
``--concurrency`` worker processes on the same snapshot. The data path and the admin API plug
into this command next (see docs/proxy.md)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import click

from pistio.cli.discovery_cmd import _grpc_target, configure_logging, split_address

log = logging.getLogger("pistio.proxy")

# Envoy's ADS retry back-off: 500 ms doubling up to 30 s, with jitter.
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0


async def _run(identity, target: str, concurrency: int, delta: bool, log_level: str) -> None:
    from pistio.agent.config_manager import ConfigManager
    from pistio.agent.worker_feed import WorkerFeed
    from pistio.xds.client import AdsClient

    client = AdsClient(
        target, identity.node_id, delta=delta, cluster=identity.service_cluster,
        metadata=identity.metadata(), backoff_initial=BACKOFF_INITIAL, backoff_max=BACKOFF_MAX,
    )
    client.node.CopyFrom(identity.node())
    manager = ConfigManager(client)
    feed = WorkerFeed(manager, concurrency, log_level=log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("pistio proxy %s starting: node %s, discovery %s, %d worker(s)",
             identity.node_type, identity.node_id, target, concurrency)
    try:
        await feed.start()
        await manager.start()
        await stop.wait()
        log.info("pistio proxy shutting down")
    finally:
        await manager.stop()
        await feed.stop()


@click.command()
@click.argument("proxy_type", type=click.Choice(["sidecar", "router"]))
@click.option("--discovery-address", default="istiod.istio-system.svc:15010",
              show_default=True, help="Discovery (istiod) xDS address, HOST:PORT.")
@click.option("--concurrency", type=int, default=2, show_default=True,
              help="Worker processes (0: one per CPU), as Istio's proxy concurrency.")
@click.option("--node-id", default=None, help="Override the xDS node id.")
@click.option("--pod", default=None, help="Pod name (default: $POD_NAME, then hostname).")
@click.option("--namespace", default=None, help="Namespace (default: $POD_NAMESPACE).")
@click.option("--ip", default=None, help="Instance IP(s), comma separated ($INSTANCE_IP).")
@click.option("--cluster-id", default=None, help="Cluster id (default: Kubernetes).")
@click.option("--service-account", default=None, help="Service account ($SERVICE_ACCOUNT).")
@click.option("--label", "labels", multiple=True, help="Pod label KEY=VALUE (repeatable).")
@click.option("--locality", default=None, help="region/zone/subzone of this proxy.")
@click.option("--admin-port", type=int, default=15000, show_default=True,
              help="Admin API port on 127.0.0.1 (served once the admin API is wired in).")
@click.option("--delta/--sotw", default=False, show_default=True,
              help="Delta or state-of-the-world xDS.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def proxy(
    proxy_type: str, discovery_address: str, concurrency: int, node_id: str | None,
    pod: str | None, namespace: str | None, ip: str | None, cluster_id: str | None,
    service_account: str | None, labels: tuple[str, ...], locality: str | None,
    admin_port: int, delta: bool, log_level: str,
) -> None:
    """Run the proxy (pilot-agent + Envoy): fetch config over ADS and apply it."""
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
    host, port = split_address(discovery_address, 15010)
    identity = node_identity(
        proxy_type, pod=pod, namespace=namespace, ip=ip, node_id=node_id,
        cluster_id=cluster_id, service_account=service_account, labels=parsed_labels,
        locality=locality,
    )
    configure_logging(log_level)
    # The agent runs gRPC's asyncio client on the standard loop; the workers (the data
    # path) run uvloop.
    asyncio.run(_run(identity, _grpc_target(host, port), workers, delta, log_level))
