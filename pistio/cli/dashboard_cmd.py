"""``pistio dashboard``: the live service graph and proxy sync list (Kiali's port, 20001)."""

from __future__ import annotations

import re
import signal
import sys
from types import FrameType

import click

from pistio.cli.proxy_status_cmd import DEFAULT_DISCOVERY_ADDRESS

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_window(text: str) -> float:
    """A Prometheus duration (``60s``, ``1m``, ``1m30s``) in seconds; click's error otherwise."""
    match = _DURATION.match(text)
    if not text or match is None or not any(match.groups()):
        raise click.BadParameter(f"{text!r} is not a duration such as 30s, 1m or 1m30s",
                                 param_hint="--window")
    h, m, s, ms = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{text!r} is not HOST:PORT", param_hint="--address")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command("dashboard")
@click.option("--address", default="127.0.0.1:20001", show_default=True,
              help="HOST:PORT the page is served on (port 0: any free port).")
@click.option("--prometheus", "prometheus_url", default=None, metavar="URL",
              help="Query this Prometheus (Kiali's PromQL) instead of scraping the sidecars "
                   "of the local node.")
@click.option("--discovery-http", default=DEFAULT_DISCOVERY_ADDRESS, show_default=True,
              envvar="PISTIO_DISCOVERY_ADDRESS",
              help="HOST:PORT of the discovery's debug port (/debug/syncz: the proxy list).")
@click.option("--interval", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--window", default="60s", show_default=True,
              help="Rate window (PromQL range): traffic older than this is not shown.")
def dashboard(address: str, prometheus_url: str | None, discovery_http: str, interval: float,
              window: str) -> None:
    """Serve a Kiali-like page: the service graph with request rate, error rate, p99 latency
    and mTLS per edge, and every proxy's xDS sync status."""
    from pistio.dashboard.server import Dashboard, serve

    host, port = parse_address(address)
    window_seconds = parse_window(window)
    if prometheus_url:
        from pistio.dashboard.prometheus_source import PrometheusSource

        source: object = PrometheusSource(prometheus_url, window)
    else:
        if window_seconds < 2 * interval:
            raise click.BadParameter(f"{window} holds fewer than two scrapes {interval:g}s "
                                     "apart; a rate needs two", param_hint="--window")
        from pistio.dashboard.scrape_source import ScrapeSource, node_targets
        from pistio.node.config import load_node_config

        source = ScrapeSource(node_targets(load_node_config().socket), window_seconds)
    board = Dashboard(source, discovery_http, interval, window)  # type: ignore[arg-type]
    try:
        server = serve(board, host, port)
    except OSError as exc:
        click.echo(f"Error: cannot listen on {address}: {exc.strerror or exc}", err=True)
        sys.exit(1)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    bound_host, bound_port = server.server_address[:2]
    click.echo(f"pistio dashboard: http://{bound_host}:{bound_port}/")
    click.echo(f"  metrics: {board.source.description}, rates over {window}")
    click.echo(f"  proxies: discovery at {discovery_http}")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        board.stop()
        server.server_close()
