"""A Bookinfo mesh as the control plane sees it, shared by the xDS builder tests.

Istio's Bookinfo sample in namespace ``default``: productpage, details, reviews (v1, v2, v3)
and ratings, one pod each, every pod with a sidecar (``tls_mode`` ``istio``) and its own
``bookinfo-*`` service account. Configuration is ``destination-rule-all.yaml`` plus the
reviews VirtualService of ``virtual-service-reviews-test-v2.yaml`` (user ``jason`` → v2,
everyone else → v1).

Addresses (stable API for tests):

=============  ============  ===========================================
service        ClusterIP     pods (ip, version, locality)
=============  ============  ===========================================
productpage    10.96.0.10    10.244.0.10 v1 us-east1/us-east1-a
details        10.96.0.11    10.244.0.11 v1 us-east1/us-east1-a
reviews        10.96.0.12    10.244.0.12 v1, .13 v2 (us-east1/us-east1-a),
                             10.244.0.14 v3 (us-east1/us-east1-b)
ratings        10.96.0.13    10.244.0.15 v1 us-east1/us-east1-a
=============  ============  ===========================================

Every service has one port ``http`` 9080 → targetPort 9080.
"""

from __future__ import annotations

from pistio.config.loader import read_text
from pistio.config.protocol import Protocol
from pistio.config.resource import Resource
from pistio.config.validation import check_document
from pistio.pilot.model.proxy import Proxy, parse_node_id
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import Endpoint, Service, ServicePort

NAMESPACE = "default"
TRUST_DOMAIN = "cluster.local"
PORT = 9080

# app -> ClusterIP
CLUSTER_IPS = {
    "productpage": "10.96.0.10",
    "details": "10.96.0.11",
    "reviews": "10.96.0.12",
    "ratings": "10.96.0.13",
}

# (app, version, pod ip, locality)
PODS = (
    ("productpage", "v1", "10.244.0.10", "us-east1/us-east1-a"),
    ("details", "v1", "10.244.0.11", "us-east1/us-east1-a"),
    ("reviews", "v1", "10.244.0.12", "us-east1/us-east1-a"),
    ("reviews", "v2", "10.244.0.13", "us-east1/us-east1-a"),
    ("reviews", "v3", "10.244.0.14", "us-east1/us-east1-b"),
    ("ratings", "v1", "10.244.0.15", "us-east1/us-east1-a"),
)

# Istio's samples/bookinfo/networking/destination-rule-all.yaml
DESTINATION_RULES_YAML = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: productpage
  namespace: default
spec:
  host: productpage
  subsets:
  - name: v1
    labels:
      version: v1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v3
    labels:
      version: v3
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
  namespace: default
spec:
  host: ratings
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v2-mysql
    labels:
      version: v2-mysql
  - name: v2-mysql-vm
    labels:
      version: v2-mysql-vm
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: details
  namespace: default
spec:
  host: details
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"""

# Istio's samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml
REVIEWS_VIRTUAL_SERVICE_YAML = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
"""


def fqdn(app: str, namespace: str = NAMESPACE) -> str:
    return f"{app}.{namespace}.svc.cluster.local"


def spiffe(app: str, namespace: str = NAMESPACE) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/bookinfo-{app}"


def pod_name(app: str, version: str = "v1") -> str:
    return f"{app}-{version}-0"


def parse_configs(text: str, file: str = "test.yaml") -> list[Resource]:
    """Typed, validated resources from YAML; fails loudly on anything invalid."""
    docs, issues = read_text(text, file)
    assert not issues, issues
    out = []
    for doc in docs:
        checked = check_document(doc)
        assert checked.resource is not None, [str(i) for i in checked.issues]
        out.append(checked.resource)
    return out


def bookinfo_services() -> list[Service]:
    return [
        Service(
            hostname=fqdn(app),
            namespace=NAMESPACE,
            name=app,
            ports=(ServicePort("http", PORT, Protocol.HTTP, PORT),),
            addresses=(ip,),
            labels={"app": app, "service": app},
            selector={"app": app},
            service_accounts=(spiffe(app),),
            origin=f"Service {NAMESPACE}/{app}",
        )
        for app, ip in CLUSTER_IPS.items()
    ]


def bookinfo_endpoints() -> list[Endpoint]:
    return [
        Endpoint(
            address=ip,
            port=PORT,
            service_port_name="http",
            hostname=fqdn(app),
            namespace=NAMESPACE,
            labels={"app": app, "version": version},
            service_account=spiffe(app),
            locality=locality,
            tls_mode="istio",
            workload_name=f"{app}-{version}",
            pod_name=pod_name(app, version),
        )
        for app, version, ip, locality in PODS
    ]


def bookinfo_push(extra_yaml: str = "") -> PushContext:
    """The Bookinfo push context, with ``extra_yaml`` configs added after the samples'."""
    configs = parse_configs(DESTINATION_RULES_YAML + "---\n" + REVIEWS_VIRTUAL_SERVICE_YAML)
    if extra_yaml.strip():
        configs += parse_configs(extra_yaml, "extra.yaml")
    return PushContext(configs, bookinfo_services(), bookinfo_endpoints())


def sidecar_proxy(app: str = "productpage", ip: str | None = "10.244.0.10") -> Proxy:
    """The sidecar of one Bookinfo pod, as parsed from its xDS node. ``ip=None`` picks the
    app's first pod (``sidecar_proxy("reviews", None)`` is reviews-v1 at 10.244.0.12)."""
    if ip is None or (app != "productpage" and ip == "10.244.0.10"):
        ip = next(pod_ip for a, _, pod_ip, _ in PODS if a == app)
    version = next((v for a, v, pod_ip, _ in PODS if a == app and pod_ip == ip), "v1")
    name = pod_name(app, version)
    return parse_node_id(
        f"sidecar~{ip}~{name}.{NAMESPACE}~{NAMESPACE}.svc.cluster.local",
        {
            "NAMESPACE": NAMESPACE,
            "LABELS": {"app": app, "version": version},
            "SERVICE_ACCOUNT": f"bookinfo-{app}",
            "WORKLOAD_NAME": f"{app}-{version}",
            "CLUSTER_ID": "Kubernetes",
        },
    )
