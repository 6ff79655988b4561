"""A static control plane for bench/dataplane.py's ``--router`` path (not a test).

Serves one ``pistio proxy router`` an Istio-sidecar-like HTTP listener on 127.0.0.1 over ADS:
a connection manager as ``pistio discovery`` builds it for a sidecar with telemetry off (AUTO
codec, Istio's peer metadata exchange, fault, CORS, router, UUID request ids, no stream idle
timeout, RDS), and a route table with one catch-all route to an
EDS cluster holding one endpoint. ``--kind outbound`` uses Istio's default outbound route (the
default retry policy: 2 retries on connect-failure, refused-stream, unavailable, cancelled and
503, previous-hosts predicate, no timeout); ``--kind inbound`` the default inbound route.

    python bench/static_xds.py --listen-port P --upstream-port U --kind outbound --port-file F

writes the ADS port to F once serving, then runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

from envoy.config.core.v3 import address_pb2  # noqa: E402
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2  # noqa: E402
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: E402
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.request_id.uuid.v3 import uuid_pb2  # noqa: E402
from google.protobuf import duration_pb2, wrappers_pb2  # noqa: E402

from pistio.pilot.networking.http_filters import (  # noqa: E402
    ads_config_source,
    cors_filter,
    fault_filter,
    router_filter,
)
from pistio.pilot.networking.route_translation import (  # noqa: E402
    build_default_inbound_route,
    build_default_outbound_route,
)
from pistio.pilot.telemetry.metrics import metadata_exchange_filter  # noqa: E402
from pistio.xds import types as T  # noqa: E402
from pistio.xds.any_codec import pack  # noqa: E402
from pistio.xds.testing import StaticGenerator, XdsHarness  # noqa: E402
from tests.unit.proxy.http_fixtures import eds_cluster, load_assignment, route_config  # noqa: E402

CLUSTER = "outbound|8080||server.bench.svc.cluster.local"


def listener(port: int, kind: str) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        stat_prefix=f"{kind}_0.0.0.0_8080",
        use_remote_address=wrappers_pb2.BoolValue(value=False),
        stream_idle_timeout=duration_pb2.Duration(seconds=0),
        server_header_transformation=hcm_pb2.HttpConnectionManager.OVERWRITE,
        server_name="istio-envoy",
        # As Pilot's HCMs (meshConfig pathNormalization BASE).
        normalize_path=wrappers_pb2.BoolValue(value=True),
        path_with_escaped_slashes_action=hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED,
    )
    if kind == "inbound":  # Pilot's inbound HCM: x-forwarded-client-cert from mTLS peers
        hcm.forward_client_cert_details = hcm_pb2.HttpConnectionManager.APPEND_FORWARD
        hcm.set_current_client_cert_details.subject.value = True
        hcm.set_current_client_cert_details.dns = True
        hcm.set_current_client_cert_details.uri = True
    hcm.upgrade_configs.add(upgrade_type="websocket")
    hcm.rds.config_source.CopyFrom(ads_config_source())
    hcm.rds.route_config_name = "8080"
    # A sidecar's chain with telemetry off: the exchange filter stays (Istio's appendMxFilter).
    hcm.http_filters.extend([metadata_exchange_filter(kind == "inbound"), fault_filter(),
                             cors_filter(), router_filter()])
    hcm.request_id_extension.typed_config.CopyFrom(pack(uuid_pb2.UuidRequestIdConfig(
        use_request_id_for_trace_sampling=wrappers_pb2.BoolValue(value=True))))
    return listener_pb2.Listener(
        name=f"{kind}_{port}",
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address="127.0.0.1", port_value=port)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm))
        ])],
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--kind", choices=("outbound", "inbound"), default="outbound")
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    if args.kind == "outbound":
        route = build_default_outbound_route(CLUSTER, "server.bench.svc.cluster.local:8080/*")
    else:
        route = build_default_inbound_route(CLUSTER, "server.bench.svc.cluster.local:8080/*")
    tables = {t: StaticGenerator() for t in (T.CLUSTER, T.ENDPOINT, T.LISTENER, T.ROUTE)}
    tables[T.CLUSTER].set(eds_cluster(CLUSTER))
    tables[T.ENDPOINT].set(load_assignment(CLUSTER, [args.upstream_port]))
    tables[T.LISTENER].set(listener(args.listen_port, args.kind))
    tables[T.ROUTE].set(route_config("8080", [route]))
    harness = XdsHarness()
    server = await harness.server(dict(tables))
    Path(args.port_file).write_text(str(server.port))
    try:
        await asyncio.Event().wait()
    finally:
        await harness.close()


if __name__ == "__main__":
    asyncio.run(main())
