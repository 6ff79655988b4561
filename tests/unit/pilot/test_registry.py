"""Service registries: Kubernetes manifests and ServiceEntry/WorkloadEntry into Services and
Endpoints, and the aggregate's change events (full vs endpoint-only)."""

from __future__ import annotations

from pistio.config.loader import read_text
from pistio.config.protocol import Protocol
from pistio.config.resource import Resource
from pistio.config.validation import check_document
from pistio.pilot.model.service import Endpoint, HealthStatus, Resolution, Service, ServicePort
from pistio.pilot.registry import AggregateRegistry, Snapshot
from pistio.pilot.registry.kubernetes import kubernetes_snapshot
from pistio.pilot.registry.service_entry import service_entry_snapshot


def load(text: str) -> list[Resource]:
    docs, issues = read_text(text, "test.yaml")
    assert not issues
    out = []
    for doc in docs:
        checked = check_document(doc)
        assert checked.resource is not None, [str(i) for i in checked.errors]
        out.append(checked.resource)
    return out


REVIEWS = """
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
  labels: {app: reviews}
spec:
  clusterIP: 10.96.0.12
  selector: {app: reviews}
  ports:
  - name: http
    port: 9080
    targetPort: web
  - name: grpc-admin
    port: 9090
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1
  namespace: bookinfo
  labels:
    app: reviews
    version: v1
    topology.kubernetes.io/region: us-east1
    topology.kubernetes.io/zone: us-east1-a
  annotations:
    sidecar.istio.io/status: '{}'
spec:
  serviceAccountName: bookinfo-reviews
  containers:
  - name: app
    image: reviews
    ports: [{name: web, containerPort: 8080}]
status:
  podIP: 10.244.0.12
  phase: Running
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v2
  namespace: bookinfo
  labels: {app: reviews, version: v2}
spec:
  containers:
  - name: app
    image: reviews
    ports: [{name: web, containerPort: 8080}]
status:
  podIP: 10.244.0.13
  phase: Running
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-pending
  namespace: bookinfo
  labels: {app: reviews}
spec:
  containers: [{name: app, image: reviews}]
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-other-ns
  namespace: default
  labels: {app: reviews}
spec:
  containers: [{name: app, image: reviews}]
status: {podIP: 10.244.9.9}
"""


def by_port(endpoints: tuple[Endpoint, ...] | list[Endpoint], port_name: str) -> list[Endpoint]:
    return sorted(
        (e for e in endpoints if e.service_port_name == port_name), key=lambda e: e.address
    )


def test_kubernetes_service_and_pod_endpoints() -> None:
    snap = kubernetes_snapshot(load(REVIEWS), trust_domain="example.org")
    [svc] = snap.services
    assert svc.hostname == "reviews.bookinfo.svc.cluster.local"
    assert (svc.name, svc.namespace) == ("reviews", "bookinfo")
    assert svc.addresses == ("10.96.0.12",)
    assert svc.resolution is Resolution.CLIENT_SIDE_LB
    assert svc.ports == (
        ServicePort("http", 9080, Protocol.HTTP, "web"),
        ServicePort("grpc-admin", 9090, Protocol.GRPC, 9090),
    )
    assert svc.export_to == frozenset({"*"})
    assert svc.service_accounts == (
        "spiffe://example.org/ns/bookinfo/sa/bookinfo-reviews",
        "spiffe://example.org/ns/bookinfo/sa/default",
    )

    http = by_port(snap.endpoints, "http")
    # Pods in other namespaces and pods without an IP are not endpoints.
    assert [(e.address, e.port) for e in http] == [("10.244.0.12", 8080), ("10.244.0.13", 8080)]
    v1, v2 = http
    assert v1.hostname == svc.hostname and v1.namespace == "bookinfo"
    assert v1.health is HealthStatus.HEALTHY
    assert v2.health is HealthStatus.UNHEALTHY  # Ready=False
    assert v1.service_account == "spiffe://example.org/ns/bookinfo/sa/bookinfo-reviews"
    assert v2.service_account == "spiffe://example.org/ns/bookinfo/sa/default"
    assert v1.locality == "us-east1/us-east1-a"
    assert v1.tls_mode == "istio"  # injected (sidecar status annotation)
    assert v2.tls_mode == "disabled"
    assert v1.labels["version"] == "v1"
    assert (v1.pod_name, v1.workload_name) == ("reviews-v1", "reviews")
    # A numeric-less targetPort: the service port itself.
    assert [(e.address, e.port) for e in by_port(snap.endpoints, "grpc-admin")] == [
        ("10.244.0.12", 9090),
        ("10.244.0.13", 9090),
    ]


HEADLESS_AND_EXTERNAL = """
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: default
  annotations: {networking.istio.io/exportTo: "., istio-system"}
spec:
  clusterIP: None
  ports: [{name: tcp-db, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: default}
spec:
  type: ExternalName
  externalName: search.example.com
  ports: [{name: https, port: 443}]
"""


def test_headless_and_external_name_services() -> None:
    snap = kubernetes_snapshot(load(HEADLESS_AND_EXTERNAL))
    db, search = sorted(snap.services, key=lambda s: s.name)
    assert db.resolution is Resolution.PASSTHROUGH
    assert db.addresses == ()
    assert db.vip == "0.0.0.0"
    assert db.ports[0].protocol is Protocol.TCP
    assert db.export_to == frozenset({".", "istio-system"})
    assert search.resolution is Resolution.DNS_LB
    assert search.mesh_external
    assert search.external_name == "search.example.com"
    assert snap.endpoints == ()


SELECTORLESS = """
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: default}
spec:
  clusterIP: 10.96.1.1
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: legacy-abc
  namespace: default
  labels: {kubernetes.io/service-name: legacy}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [192.168.1.10]
  zone: zone-a
- addresses: [192.168.1.11]
  conditions: {ready: false}
"""


def test_selectorless_service_takes_endpoint_slices() -> None:
    snap = kubernetes_snapshot(load(SELECTORLESS))
    eps = sorted(snap.endpoints, key=lambda e: e.address)
    assert [(e.address, e.port, e.service_port_name) for e in eps] == [
        ("192.168.1.10", 8080, "http"),
        ("192.168.1.11", 8080, "http"),
    ]
    assert [e.health for e in eps] == [HealthStatus.HEALTHY, HealthStatus.UNHEALTHY]
    assert eps[0].locality == "zone-a"
    assert eps[0].hostname == "legacy.default.svc.cluster.local"


SERVICE_ENTRIES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-apis, namespace: egress}
spec:
  hosts: [api.example.com, www.example.com]
  location: MESH_EXTERNAL
  ports:
  - {number: 443, name: https, protocol: TLS}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: default}
spec:
  hosts: [vm.internal]
  addresses: [240.0.0.10]
  location: MESH_INTERNAL
  ports:
  - {number: 8080, name: http, protocol: HTTP, targetPort: 9080}
  resolution: STATIC
  workloadSelector:
    labels: {app: vm}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: default}
spec:
  address: 10.0.0.21
  labels: {app: vm, version: v1}
  serviceAccount: vm-sa
  weight: 3
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-2, namespace: default}
spec:
  address: 10.0.0.22
  labels: {app: vm}
  ports: {http: 7070}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: default}
spec:
  address: 10.0.0.23
  labels: {app: other}
"""


def test_service_entries_and_workload_entries() -> None:
    snap = service_entry_snapshot(load(SERVICE_ENTRIES))
    services = {s.hostname: s for s in snap.services}
    assert set(services) == {"api.example.com", "www.example.com", "vm.internal"}
    api = services["api.example.com"]
    assert api.mesh_external and api.resolution is Resolution.DNS_LB
    assert api.namespace == "egress" and api.ports[0].protocol is Protocol.TLS
    # DNS without endpoints: the host itself is the endpoint.
    [api_ep] = [e for e in snap.endpoints if e.hostname == "api.example.com"]
    assert (api_ep.address, api_ep.port) == ("api.example.com", 443)

    vm = services["vm.internal"]
    assert vm.addresses == ("240.0.0.10",) and not vm.mesh_external
    assert vm.resolution is Resolution.CLIENT_SIDE_LB
    vm_eps = sorted(
        (e for e in snap.endpoints if e.hostname == "vm.internal"), key=lambda e: e.address
    )
    # The WorkloadEntry's named port wins, else the ServiceEntry's targetPort.
    assert [(e.address, e.port, e.weight) for e in vm_eps] == [
        ("10.0.0.21", 9080, 3),
        ("10.0.0.22", 7070, 1),
    ]
    assert vm_eps[0].service_account == "spiffe://cluster.local/ns/default/sa/vm-sa"
    assert vm_eps[0].workload_name == "vm-1"


def _svc(host: str, port: int = 80) -> Service:
    return Service(host, "default", host.split(".")[0], (ServicePort("http", port, Protocol.HTTP),))


def _ep(host: str, ip: str) -> Endpoint:
    return Endpoint(ip, 8080, "http", host, "default")


def test_aggregate_distinguishes_endpoint_only_changes() -> None:
    registry = AggregateRegistry()
    events: list[tuple[bool, frozenset[str]]] = []
    registry.subscribe(lambda eds_only, hosts: events.append((eds_only, hosts)))

    registry.update("kubernetes", Snapshot((_svc("a.default.svc.cluster.local"),), ()))
    assert events[-1] == (False, frozenset())

    registry.update(
        "kubernetes",
        Snapshot(
            (_svc("a.default.svc.cluster.local"),),
            (_ep("a.default.svc.cluster.local", "10.0.0.1"),),
        ),
    )
    assert events[-1] == (True, frozenset({"a.default.svc.cluster.local"}))

    # The same snapshot again: no event.
    count = len(events)
    registry.update(
        "kubernetes",
        Snapshot(
            (_svc("a.default.svc.cluster.local"),),
            (_ep("a.default.svc.cluster.local", "10.0.0.1"),),
        ),
    )
    assert len(events) == count

    # A service port change is a full change even with endpoints changing too.
    registry.update(
        "kubernetes",
        Snapshot(
            (_svc("a.default.svc.cluster.local", 81),),
            (_ep("a.default.svc.cluster.local", "10.0.0.2"),),
        ),
    )
    assert events[-1][0] is False

    # Sources add up.
    registry.update("runtime", Snapshot((_svc("b.default.svc.cluster.local"),), ()))
    assert sorted(s.hostname for s in registry.services()) == [
        "a.default.svc.cluster.local",
        "b.default.svc.cluster.local",
    ]
    assert [e.address for e in registry.endpoints()] == ["10.0.0.2"]


def test_aggregate_new_service_account_is_a_full_change() -> None:
    # Istio pushes in full when a service gains an identity: clusters carry the SANs.
    registry = AggregateRegistry()
    events: list[tuple[bool, frozenset[str]]] = []
    registry.subscribe(lambda eds_only, hosts: events.append((eds_only, hosts)))
    pods = REVIEWS.split("---")
    registry.update("kubernetes", kubernetes_snapshot(load("---".join(pods[:3]))))
    # reviews-v3 runs as a new service account.
    v3 = pods[1].replace("reviews-v1", "reviews-v3").replace("10.244.0.12", "10.244.0.14")
    v3 = v3.replace("bookinfo-reviews", "reviews-v3")
    registry.update("kubernetes", kubernetes_snapshot(load("---".join([*pods[:3], v3]))))
    assert events[-1][0] is False
    # Another pod with a known identity: endpoints only.
    v4 = pods[1].replace("reviews-v1", "reviews-v4").replace("10.244.0.12", "10.244.0.15")
    registry.update("kubernetes", kubernetes_snapshot(load("---".join([*pods[:3], v3, v4]))))
    assert events[-1] == (True, frozenset({"reviews.bookinfo.svc.cluster.local"}))
