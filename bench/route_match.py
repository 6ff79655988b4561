"""Route lookup micro-benchmark: virtual host selection plus route matching per request.

Builds a route configuration the way Istio's sidecar RDS looks at scale: N virtual hosts
(``svc-<i>.default.svc.cluster.local`` with its short names and a VIP, ports ignored), each
with a mix of routes — a header match (``end-user: jason``), an exact path, a regex, a
case-insensitive prefix with a query parameter — ending in a catch-all, plus ``allow_any``.
Requests cycle over hosts in the forms clients send (``svc-7:9080``, FQDN, VIP, unknown).

Prints lookups per second (a lookup is ``RouteTable.route``: host → virtual host → route),
and the same for the virtual host step alone. Not a timed test.

    .venv/bin/python bench/route_match.py --vhosts 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envoy.config.route.v3 import route_pb2  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from pistio.proxy.config.route_match import RequestView  # noqa: E402
from pistio.proxy.config.route_table import RouteTable  # noqa: E402


def route_config(vhosts: int) -> route_pb2.RouteConfiguration:
    hosts = []
    for i in range(vhosts):
        fqdn = f"svc-{i}.default.svc.cluster.local"

        def to(subset: str, i: int = i) -> dict:
            return {"cluster": f"outbound|9080|{subset}|svc-{i}.default.svc.cluster.local",
                    "timeout": "0s"}

        hosts.append({
            "name": f"{fqdn}:9080",
            "domains": [fqdn, f"svc-{i}", f"svc-{i}.default.svc", f"svc-{i}.default",
                        f"10.96.{i // 256}.{i % 256}"],
            "routes": [
                {"match": {"prefix": "/", "headers": [
                    {"name": "end-user", "string_match": {"exact": "jason"}}]},
                 "route": to("v2")},
                {"match": {"path": "/health"}, "direct_response": {"status": 200}},
                {"match": {"safe_regex": {"regex": "/api/v[0-9]+/items/[0-9]+"}},
                 "route": to("v3")},
                {"match": {"prefix": "/Admin", "case_sensitive": False,
                           "query_parameters": [{"name": "debug", "present_match": True}]},
                 "route": to("v4")},
                {"match": {"prefix": "/"}, "route": to("v1")},
            ],
        })
    hosts.append({"name": "allow_any", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster"}}]})
    return json_format.ParseDict(
        {"name": "9080", "ignore_port_in_host_matching": True, "virtual_hosts": hosts},
        route_pb2.RouteConfiguration(),
    )


def requests(vhosts: int, count: int) -> list[RequestView]:
    out = []
    paths = ["/productpage", "/api/v1/items/42", "/admin/x?debug=1", "/health", "/reviews/1?a=b"]
    for n in range(count):
        i = (n * 7919) % vhosts
        authority = (f"svc-{i}:9080", f"svc-{i}.default.svc.cluster.local:9080",
                     f"10.96.{i // 256}.{i % 256}", "example.com", f"svc-{i}")[n % 5]
        headers = {"end-user": "jason"} if n % 11 == 0 else {"user-agent": "curl/8.5.0"}
        out.append(RequestView.of("GET", paths[n % len(paths)], authority, headers))
    return out


def rate(fn, items: list, rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = max(best, len(items) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vhosts", type=int, default=200)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    config = route_config(args.vhosts)
    start = time.perf_counter()
    table = RouteTable.compile(config)
    compile_ms = (time.perf_counter() - start) * 1000
    reqs = requests(args.vhosts, args.requests)
    assert all(table.route(r) is not None for r in reqs[:1000])
    lookups = rate(table.route, reqs, args.rounds)
    authorities = [r.authority for r in reqs]
    vhost_only = rate(table.select_virtual_host, authorities, args.rounds)
    routes = sum(len(vh.routes) for vh in table.virtual_hosts)
    print(f"route table: {len(table.virtual_hosts)} virtual hosts, {routes} routes, "
          f"compiled in {compile_ms:.1f} ms")
    print(f"route lookups (host + route match): {lookups:,.0f}/s "
          f"({1e6 / lookups:.2f} µs each)")
    print(f"virtual host selection alone:       {vhost_only:,.0f}/s "
          f"({1e6 / vhost_only:.2f} µs each)")


if __name__ == "__main__":
    main()
