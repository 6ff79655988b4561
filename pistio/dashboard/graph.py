"""Kiali's versioned app graph, built from the dashboard's query results.

Nodes: a workload (app + version, e.g. ``reviews v2``), a service (``reviews``), and
``unknown`` for callers outside the mesh. Each request series adds two hops, source workload →
service and service → destination workload (a service nobody answered for, e.g. one without a
sidecar, ends the path). Edges carry the request rate, the 5xx share, the p99 latency of that
hop, TCP bytes per second, and the share of traffic the destination accepted over mutual TLS
(the padlock). Health colours follow Kiali's default tolerance for 5xx: any error rate of
0.1% or more is degraded, more than 10% is a failure.

The layout is layered: callers on the left, the services they reach to the right; the layer is
the longest path from a node nobody calls (after dropping the edges that close a cycle), and
nodes in a layer are ordered by the mean row of their callers to keep edges from crossing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pistio.dashboard.promql import Vector

DEGRADED_PERCENT = 0.1
FAILURE_PERCENT = 10.0
UNKNOWN = "unknown"


def health(error_percent: float | None, rps: float) -> str:
    if rps <= 0 or error_percent is None:
        return "idle"
    if error_percent > FAILURE_PERCENT:
        return "failure"
    if error_percent >= DEGRADED_PERCENT:
        return "degraded"
    return "healthy"


def _known(value: str | None) -> str | None:
    return value if value and value != UNKNOWN else None


@dataclass
class Node:
    id: str
    kind: str  # "workload" | "service" | "unknown"
    label: str
    namespace: str = ""
    app: str = ""
    version: str = ""
    workload: str = ""
    service: str = ""
    inbound_rps: float = 0.0
    inbound_errors: float = 0.0
    error_ratio: float | None = None  # the workload's inbound 5xx share, when queried
    layer: int = 0
    row: int = 0

    def to_json(self) -> dict[str, Any]:
        if self.error_ratio is not None and not math.isnan(self.error_ratio):
            error_percent: float | None = self.error_ratio * 100
        elif self.inbound_rps > 0:
            error_percent = self.inbound_errors / self.inbound_rps * 100
        else:
            error_percent = None
        return {
            "id": self.id, "kind": self.kind, "label": self.label,
            "namespace": self.namespace, "app": self.app, "version": self.version,
            "workload": self.workload, "service": self.service,
            "inboundRps": self.inbound_rps, "errorPercent": error_percent,
            "health": health(error_percent, self.inbound_rps),
            "layer": self.layer, "row": self.row,
        }


@dataclass
class Edge:
    source: str
    target: str
    rps: float = 0.0
    errors: float = 0.0
    codes: dict[str, float] = field(default_factory=dict)
    p99_ms: float | None = None
    tcp_bytes: float = 0.0
    secured: float = 0.0  # destination-reported traffic accepted over mutual TLS...
    observed: float = 0.0  # ...out of all destination-reported traffic on this edge

    @property
    def id(self) -> str:
        return f"{self.source}->{self.target}"

    def to_json(self) -> dict[str, Any]:
        error_percent = self.errors / self.rps * 100 if self.rps > 0 else None
        mtls_percent = self.secured / self.observed * 100 if self.observed > 0 else None
        return {
            "id": self.id, "source": self.source, "target": self.target,
            "protocol": "http" if self.rps > 0 else "tcp",
            "rps": self.rps, "errorPercent": error_percent,
            "responses": dict(sorted(self.codes.items())),
            "p99Ms": self.p99_ms, "tcpBytesPerSecond": self.tcp_bytes,
            "mtls": bool(mtls_percent), "mtlsPercent": mtls_percent,
            "health": health(error_percent, self.rps) if self.rps > 0 else "idle",
        }


def source_id(d: Mapping[str, str]) -> str:
    workload = _known(d.get("source_workload"))
    return UNKNOWN if workload is None else \
        f"workload:{d.get('source_workload_namespace', '')}:{workload}"


def destination_id(d: Mapping[str, str]) -> str | None:
    workload = _known(d.get("destination_workload"))
    return None if workload is None else \
        f"workload:{d.get('destination_workload_namespace', '')}:{workload}"


def service_ref(d: Mapping[str, str]) -> tuple[str, str, str, str]:
    """(node id, name, namespace, host) of the service a series went to."""
    host = d.get("destination_service") or d.get("destination_service_name") or UNKNOWN
    name = _known(d.get("destination_service_name")) or host.split(".")[0]
    namespace = _known(d.get("destination_service_namespace")) or (
        host.split(".")[1] if host.count(".") >= 2 else "")
    return f"service:{namespace}:{name}", name, namespace, host


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple[str, str], Edge] = {}

    def _add_nodes(self, d: Mapping[str, str]) -> None:
        """The nodes of a series with traffic: caller, service, and the workload that
        answered."""
        caller = source_id(d)
        if caller == UNKNOWN:
            self.nodes.setdefault(UNKNOWN, Node(UNKNOWN, "unknown", UNKNOWN))
        else:
            self._add_workload(caller, d, "source")
        service, name, namespace, host = service_ref(d)
        self.nodes.setdefault(service, Node(service, "service", name, namespace=namespace,
                                            service=host))
        callee = destination_id(d)
        if callee is not None:
            self._add_workload(callee, d, "destination")

    def _add_workload(self, node_id: str, d: Mapping[str, str], side: str) -> None:
        if node_id in self.nodes:
            return
        workload = d.get(f"{side}_workload", "")
        app = _known(d.get(f"{side}_app")) or ""
        version = _known(d.get(f"{side}_version")) or ""
        label = f"{app} {version}" if app and version else workload
        self.nodes[node_id] = Node(node_id, "workload", label,
                                   namespace=d.get(f"{side}_workload_namespace", ""),
                                   app=app, version=version, workload=workload)

    def _hops(self, d: Mapping[str, str], create: bool) -> list[Edge]:
        """The edges one series travels: source → service, then service → workload. With
        ``create`` false, only those that traffic already drew."""
        if create:
            self._add_nodes(d)
        service = service_ref(d)[0]
        pairs = [(source_id(d), service)]
        callee = destination_id(d)
        if callee is not None:
            pairs.append((service, callee))
        edges = []
        for pair in pairs:
            if create and pair not in self.edges:
                self.edges[pair] = Edge(*pair)
            edge = self.edges.get(pair)
            if edge is not None:
                edges.append(edge)
        return edges

    # -- the query results ----------------------------------------------------------------

    def add_requests(self, vector: Vector) -> None:
        for labels, rate in vector.items():
            if not rate > 0:  # idle series (and NaN) draw nothing, as Kiali hides idle edges
                continue
            d = dict(labels)
            code = d.get("response_code", "")
            failed = code.startswith("5")
            for edge in self._hops(d, create=True):
                edge.rps += rate
                edge.codes[code] = edge.codes.get(code, 0.0) + rate
                if failed:
                    edge.errors += rate
                target = self.nodes[edge.target]
                target.inbound_rps += rate
                if failed:
                    target.inbound_errors += rate

    def add_tcp(self, vector: Vector) -> None:
        for labels, rate in vector.items():
            if rate > 0:
                for edge in self._hops(dict(labels), create=True):
                    edge.tcp_bytes += rate

    def add_security(self, vector: Vector) -> None:
        for labels, rate in vector.items():
            if not rate > 0:
                continue
            d = dict(labels)
            for edge in self._hops(d, create=False):
                edge.observed += rate
                if d.get("connection_security_policy") == "mutual_tls":
                    edge.secured += rate

    def add_latency(self, vector: Vector, hop: str) -> None:
        """p99 of one hop: ``to_service`` keys by source + service, ``to_workload`` by
        service + destination."""
        for labels, value in vector.items():
            if math.isnan(value) or math.isinf(value):
                continue
            d = dict(labels)
            service = service_ref(d)[0]
            pair = (source_id(d), service) if hop == "to_service" else \
                (service, destination_id(d) or "")
            edge = self.edges.get(pair)
            if edge is not None:
                edge.p99_ms = value

    def add_workload_errors(self, vector: Vector) -> None:
        for labels, ratio in vector.items():
            node = self.nodes.get(destination_id(dict(labels)) or "")
            if node is not None:
                node.error_ratio = ratio

    # -- layout ---------------------------------------------------------------------------

    def layout(self) -> None:
        order = sorted(self.nodes, key=lambda n: (self.nodes[n].kind != "unknown", n))
        successors: dict[str, list[str]] = {n: [] for n in order}
        for source, target in sorted(self.edges):
            successors[source].append(target)
        forward = _acyclic_edges(order, successors)
        layer = dict.fromkeys(order, 0)
        for node in _topological(order, forward):
            for nxt in forward[node]:
                layer[nxt] = max(layer[nxt], layer[node] + 1)
        predecessors: dict[str, list[str]] = {n: [] for n in order}
        for node, nexts in forward.items():
            for nxt in nexts:
                predecessors[nxt].append(node)
        rows: dict[str, int] = {}
        for depth in range(max(layer.values(), default=-1) + 1):
            members = [n for n in order if layer[n] == depth]

            def barycentre(n: str) -> tuple[float, str]:
                placed = [rows[p] for p in predecessors[n] if p in rows]
                return (sum(placed) / len(placed) if placed else 0.0, self.nodes[n].label)

            for row, node in enumerate(sorted(members, key=barycentre)):
                rows[node] = row
        for node_id, node in self.nodes.items():
            node.layer, node.row = layer[node_id], rows[node_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [n.to_json() for n in sorted(self.nodes.values(), key=lambda n: n.id)],
            "edges": [e.to_json() for _, e in sorted(self.edges.items())],
        }


def _acyclic_edges(order: list[str], successors: dict[str, list[str]]) -> dict[str, list[str]]:
    """The edges minus those that close a cycle (found by depth-first search)."""
    forward: dict[str, list[str]] = {n: [] for n in order}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    roots = [n for n in order if not any(n in s for s in successors.values())]
    for root in roots + order:
        if root in state:
            continue
        stack = [(root, iter(successors[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) != 1:  # not a back edge
                forward[node].append(nxt)
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(successors[nxt])))
    return forward


def _topological(order: list[str], forward: dict[str, list[str]]) -> list[str]:
    indegree = dict.fromkeys(order, 0)
    for nexts in forward.values():
        for nxt in nexts:
            indegree[nxt] += 1
    ready = [n for n in order if indegree[n] == 0]
    out = []
    while ready:
        node = ready.pop(0)
        out.append(node)
        for nxt in forward[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    return out


def build_graph(vectors: Mapping[str, Vector]) -> dict[str, Any]:
    """Nodes and edges (JSON-ready, laid out) from the results of :data:`promql.QUERIES`."""
    builder = GraphBuilder()
    builder.add_requests(vectors.get("requests", {}))
    builder.add_tcp(vectors.get("tcp_sent", {}))
    builder.add_tcp(vectors.get("tcp_received", {}))
    builder.add_security(vectors.get("http_security", {}))
    builder.add_security(vectors.get("tcp_security", {}))
    builder.add_latency(vectors.get("p99_to_service", {}), "to_service")
    builder.add_latency(vectors.get("p99_to_workload", {}), "to_workload")
    builder.add_workload_errors(vectors.get("workload_error_ratio", {}))
    builder.layout()
    return builder.to_json()
