"""AuthorizationPolicy → Envoy RBAC, on Istio's documented examples: the filters a workload
gets, their order, policy names and the generated permissions and principals."""

from __future__ import annotations

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as tcp_rbac
from google.protobuf import json_format

from pistio.api.mesh import MeshConfig
from pistio.config.protocol import Protocol
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import Endpoint, Service, ServicePort
from pistio.xds.any_codec import unpack
from tests.unit.pilot.bookinfo_fixture import (
    bookinfo_endpoints,
    bookinfo_services,
    parse_configs,
    sidecar_proxy,
)
from tests.unit.pilot.security.helpers import (
    chains_for_port,
    http_filter_names,
    http_filters,
    inbound,
)

RBAC = "envoy.filters.http.rbac"


def policy(name: str, body: str, ns: str = "default", annotations: str = "") -> str:
    meta = f"metadata:\n  name: {name}\n  namespace: {ns}\n"
    if annotations:
        meta += f"  annotations: {annotations}\n"
    return f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n{meta}spec:\n{body}"


def app_chain(yaml: str, app: str = "productpage"):
    lst = inbound(yaml, proxy=sidecar_proxy(app, None))
    tls_chain, plain_chain = chains_for_port(lst, 9080)
    # Both chains of a port carry the same filters.
    assert http_filter_names(tls_chain) == http_filter_names(plain_chain)
    return plain_chain


def rbac_configs(yaml: str, app: str = "productpage") -> list[http_rbac.RBAC]:
    return [unpack(f.typed_config) for f in http_filters(app_chain(yaml, app)) if f.name == RBAC]


def as_dict(msg) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=False)


def test_no_policy_no_filter() -> None:
    assert http_filter_names(app_chain("")) == [
        "istio.metadata_exchange",
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "istio.stats",
        "envoy.filters.http.router",
    ]


def test_allow_nothing() -> None:
    (cfg,) = rbac_configs(policy("allow-nothing", "  {}\n"))
    assert as_dict(cfg) == {
        "rules": {
            "policies": {
                "ns[default]-policy[allow-nothing]-rule[0]": {
                    "permissions": [{"notRule": {"any": True}}],
                    "principals": [{"notId": {"any": True}}],
                }
            }
        }
    }
    assert cfg.rules.action == rbac_pb2.RBAC.ALLOW


def test_deny_all() -> None:
    (cfg,) = rbac_configs(policy("deny-all", "  action: DENY\n  rules:\n  - {}\n"))
    assert cfg.rules.action == rbac_pb2.RBAC.DENY
    assert as_dict(cfg.rules.policies["ns[default]-policy[deny-all]-rule[0]"]) == {
        "permissions": [{"andRules": {"rules": [{"any": True}]}}],
        "principals": [{"andIds": {"ids": [{"any": True}]}}],
    }


def test_allow_by_principal_method_and_path() -> None:
    # Istio's "productpage-viewer"/"details-viewer" shape with a principal.
    body = """  selector:
    matchLabels: {app: productpage}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*", "*/suffix", "/exact", "*"]
"""
    (cfg,) = rbac_configs(policy("viewer", body))
    got = as_dict(cfg.rules.policies["ns[default]-policy[viewer]-rule[0]"])
    assert got == {
        "permissions": [
            {
                "andRules": {
                    "rules": [
                        {
                            "orRules": {
                                "rules": [
                                    {"header": {"name": ":method", "stringMatch": {"exact": "GET"}}}
                                ]
                            }
                        },
                        {
                            "orRules": {
                                "rules": [
                                    {"urlPath": {"path": {"prefix": "/info"}}},
                                    {"urlPath": {"path": {"suffix": "/suffix"}}},
                                    {"urlPath": {"path": {"exact": "/exact"}}},
                                    {"urlPath": {"path": {"safeRegex": {"regex": ".+"}}}},
                                ]
                            }
                        },
                    ]
                }
            }
        ],
        "principals": [
            {
                "andIds": {
                    "ids": [
                        {
                            "orIds": {
                                "ids": [
                                    {
                                        "authenticated": {
                                            "principalName": {
                                                "exact": "spiffe://cluster.local/ns/default/sa/sleep"
                                            }
                                        }
                                    }
                                ]
                            }
                        }
                    ]
                }
            }
        ],
    }
    # The selector: reviews gets nothing.
    assert rbac_configs(policy("viewer", body), app="reviews") == []


def test_namespaces_ip_blocks_and_not_forms() -> None:
    body = """  action: DENY
  rules:
  - from:
    - source:
        notNamespaces: ["foo", "bar*"]
        ipBlocks: ["10.1.2.3", "10.0.0.0/16"]
        notRemoteIpBlocks: ["192.168.0.0/24"]
        notPrincipals: ["*"]
    - source:
        serviceAccounts: ["sleep", "other/curl"]
    to:
    - operation:
        hosts: ["example.com", "*.example.org"]
        notMethods: ["DELETE"]
        notPaths: ["/admin*"]
        ports: ["9080"]
"""
    (cfg,) = rbac_configs(policy("deny-misc", body))
    got = as_dict(cfg.rules.policies["ns[default]-policy[deny-misc]-rule[0]"])
    perms = got["permissions"][0]["andRules"]["rules"]
    assert perms == [
        {
            "orRules": {
                "rules": [
                    {
                        "header": {
                            "name": ":authority",
                            "stringMatch": {"exact": "example.com", "ignoreCase": True},
                        }
                    },
                    {
                        "header": {
                            "name": ":authority",
                            "stringMatch": {"suffix": ".example.org", "ignoreCase": True},
                        }
                    },
                ]
            }
        },
        {
            "notRule": {
                "orRules": {
                    "rules": [{"header": {"name": ":method", "stringMatch": {"exact": "DELETE"}}}]
                }
            }
        },
        {"notRule": {"orRules": {"rules": [{"urlPath": {"path": {"prefix": "/admin"}}}]}}},
        {"orRules": {"rules": [{"destinationPort": 9080}]}},
    ]
    first, second = (p["andIds"]["ids"] for p in got["principals"])
    assert second == [
        {
            "orIds": {
                "ids": [
                    {
                        "authenticated": {
                            "principalName": {
                                "safeRegex": {
                                    "regex": "spiffe://.+/ns/default/(.+/|)sa/sleep(/.+)?"
                                }
                            }
                        }
                    },
                    {
                        "authenticated": {
                            "principalName": {
                                "safeRegex": {"regex": "spiffe://.+/ns/other/(.+/|)sa/curl(/.+)?"}
                            }
                        }
                    },
                ]
            }
        }
    ]
    assert first == [
        {
            "notId": {
                "orIds": {
                    "ids": [{"authenticated": {"principalName": {"safeRegex": {"regex": ".+"}}}}]
                }
            }
        },
        {
            "notId": {
                "orIds": {
                    "ids": [
                        {
                            "authenticated": {
                                "principalName": {"safeRegex": {"regex": ".*/ns/foo/.*"}}
                            }
                        },
                        {
                            "authenticated": {
                                "principalName": {"safeRegex": {"regex": ".*/ns/bar.*/.*"}}
                            }
                        },
                    ]
                }
            }
        },
        {
            "notId": {
                "orIds": {"ids": [{"remoteIp": {"addressPrefix": "192.168.0.0", "prefixLen": 24}}]}
            }
        },
        {
            "orIds": {
                "ids": [
                    {"directRemoteIp": {"addressPrefix": "10.1.2.3", "prefixLen": 32}},
                    {"directRemoteIp": {"addressPrefix": "10.0.0.0", "prefixLen": 16}},
                ]
            }
        },
    ]


def test_conditions() -> None:
    body = """  rules:
  - when:
    - key: request.headers[version]
      values: ["v1", "v2"]
    - key: source.ip
      notValues: ["10.0.0.1"]
    - key: destination.port
      values: ["9080"]
    - key: connection.sni
      values: ["*.local"]
    - key: request.auth.claims[groups]
      values: ["group1"]
    - key: request.auth.claims[nested][key]
      notValues: ["a", "b"]
    - key: request.auth.audiences
      values: ["bookstore"]
    - key: request.auth.presenter
      values: ["pres*"]
    - key: source.namespace
      values: ["default"]
    - key: destination.ip
      values: ["10.244.0.10"]
"""
    (cfg,) = rbac_configs(policy("conds", body))
    got = as_dict(cfg.rules.policies["ns[default]-policy[conds]-rule[0]"])
    assert got["permissions"] == [
        {
            "andRules": {
                "rules": [
                    {"orRules": {"rules": [{"destinationPort": 9080}]}},
                    {"orRules": {"rules": [{"requestedServerName": {"suffix": ".local"}}]}},
                    {
                        "orRules": {
                            "rules": [
                                {"destinationIp": {"addressPrefix": "10.244.0.10", "prefixLen": 32}}
                            ]
                        }
                    },
                ]
            }
        }
    ]

    def claim(path, value):
        return {
            "metadata": {
                "filter": "envoy.filters.http.jwt_authn",
                "path": [{"key": k} for k in ["payload", *path]],
                "value": {"orMatch": {"valueMatchers": [{"listMatch": {"oneOf": value}}, value]}},
            }
        }

    ids = got["principals"][0]["andIds"]["ids"]
    assert ids == [
        {
            "orIds": {
                "ids": [
                    {"header": {"name": "version", "stringMatch": {"exact": "v1"}}},
                    {"header": {"name": "version", "stringMatch": {"exact": "v2"}}},
                ]
            }
        },
        {
            "notId": {
                "orIds": {
                    "ids": [{"directRemoteIp": {"addressPrefix": "10.0.0.1", "prefixLen": 32}}]
                }
            }
        },
        claim(["groups"], {"stringMatch": {"exact": "group1"}}),
        {
            "notId": claim(
                ["nested", "key"],
                {
                    "orMatch": {
                        "valueMatchers": [
                            {"stringMatch": {"exact": "a"}},
                            {"stringMatch": {"exact": "b"}},
                        ]
                    }
                },
            )
        },
        claim(["aud"], {"stringMatch": {"exact": "bookstore"}}),
        claim(["azp"], {"stringMatch": {"prefix": "pres"}}),
        {
            "orIds": {
                "ids": [
                    {
                        "authenticated": {
                            "principalName": {"safeRegex": {"regex": ".*/ns/default/.*"}}
                        }
                    }
                ]
            }
        },
    ]


def test_request_principals() -> None:
    body = """  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io", "https://issuer.example.com/*", "*"]
"""
    (cfg,) = rbac_configs(policy("jwt", body))
    ids = as_dict(cfg.rules.policies["ns[default]-policy[jwt]-rule[0]"])["principals"][0]["andIds"][
        "ids"
    ]

    def iss_sub(iss, sub):
        return {
            "andIds": {
                "ids": [
                    {
                        "metadata": {
                            "filter": "envoy.filters.http.jwt_authn",
                            "path": [{"key": "payload"}, {"key": "iss"}],
                            "value": {"stringMatch": iss},
                        }
                    },
                    {
                        "metadata": {
                            "filter": "envoy.filters.http.jwt_authn",
                            "path": [{"key": "payload"}, {"key": "sub"}],
                            "value": {"stringMatch": sub},
                        }
                    },
                ]
            }
        }

    assert ids == [
        {
            "orIds": {
                "ids": [
                    iss_sub(
                        {"exact": "testing@secure.istio.io"}, {"exact": "testing@secure.istio.io"}
                    ),
                    iss_sub(
                        {"exact": "https://issuer.example.com"}, {"safeRegex": {"regex": ".+"}}
                    ),
                    iss_sub({"safeRegex": {"regex": ".+"}}, {"safeRegex": {"regex": ".+"}}),
                ]
            }
        }
    ]


def test_filter_order_custom_jwt_audit_deny_allow() -> None:
    mesh = MeshConfig.model_validate(
        {
            "extensionProviders": [
                {
                    "name": "ext",
                    "envoyExtAuthzHttp": {
                        "service": "details.default.svc.cluster.local",
                        "port": 9080,
                        "includeRequestHeadersInCheck": ["x-ext-authz"],
                        "headersToUpstreamOnAllow": ["x-allowed*"],
                        "statusOnError": "503",
                        "failOpen": False,
                        "timeout": "2s",
                    },
                }
            ]
        }
    )
    yaml = "---\n".join(
        [
            policy("allow", "  rules:\n  - to:\n    - operation: {methods: [GET]}\n"),
            policy(
                "deny", "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [/admin]}\n"
            ),
            policy("audit", "  action: AUDIT\n  rules:\n  - {}\n"),
            policy(
                "custom",
                "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - to:\n    - operation: {paths: [/ext]}\n",
            ),
            policy("dry", "  rules:\n  - {}\n", annotations='{"istio.io/dry-run": "true"}'),
            """apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '{"keys": []}'
""",
        ]
    )
    push = PushContext(parse_configs(yaml), bookinfo_services(), bookinfo_endpoints(), mesh)
    chain = chains_for_port(inbound(push=push), 9080)[1]
    filters = http_filters(chain)
    assert [f.name for f in filters] == [
        "istio.metadata_exchange",  # first: RBAC may read the peer's metadata
        "envoy.filters.http.rbac",  # CUSTOM: shadow rules mark requests for ext_authz
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac",  # AUDIT
        "envoy.filters.http.rbac",  # DENY
        "envoy.filters.http.rbac",  # ALLOW (+ dry-run shadow)
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",  # a bare MeshConfig: no default metrics provider
    ]
    custom, ext, _, audit, deny, allow = (unpack(f.typed_config) for f in filters[1:7])
    assert not custom.HasField("rules")
    assert custom.shadow_rules_stat_prefix == "istio_ext_authz_"
    assert list(custom.shadow_rules.policies) == [
        "istio-ext-authz-ns[default]-policy[custom]-rule[0]"
    ]
    assert custom.shadow_rules.action == rbac_pb2.RBAC.DENY
    assert isinstance(ext, ext_authz_pb2.ExtAuthz)
    assert as_dict(ext.filter_enabled_metadata) == {
        "filter": "envoy.filters.http.rbac",
        "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
        "value": {"stringMatch": {"prefix": "istio-ext-authz"}},
    }
    assert ext.http_service.server_uri.cluster == "outbound|9080||details.default.svc.cluster.local"
    assert ext.http_service.server_uri.uri == "http://details.default.svc.cluster.local"
    assert ext.http_service.server_uri.timeout.seconds == 2
    assert ext.status_on_error.code == 503
    assert [p.exact for p in ext.http_service.authorization_request.allowed_headers.patterns] == [
        "x-ext-authz"
    ]
    assert [
        p.prefix for p in ext.http_service.authorization_response.allowed_upstream_headers.patterns
    ] == ["x-allowed"]
    assert audit.rules.action == rbac_pb2.RBAC.LOG
    assert deny.rules.action == rbac_pb2.RBAC.DENY
    assert allow.rules.action == rbac_pb2.RBAC.ALLOW
    assert list(allow.rules.policies) == ["ns[default]-policy[allow]-rule[0]"]
    assert list(allow.shadow_rules.policies) == ["ns[default]-policy[dry]-rule[0]"]
    assert allow.shadow_rules_stat_prefix == "istio_dry_run_allow_"


def test_bad_custom_provider_denies() -> None:
    yaml = policy("custom", "  action: CUSTOM\n  provider: {name: missing}\n  rules:\n  - {}\n")
    (cfg,) = rbac_configs(yaml)
    assert cfg.rules.action == rbac_pb2.RBAC.DENY
    assert list(cfg.rules.policies) == [
        "istio-ext-authz-ns[default]-policy[custom]-rule[0]-deny-due-to-bad-CUSTOM-action"
    ]


def test_root_namespace_policy_applies_mesh_wide_and_target_refs_skip_sidecars() -> None:
    yaml = "---\n".join(
        [
            policy(
                "mesh-deny",
                "  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [DELETE]}\n",
                ns="istio-system",
            ),
            policy("other-ns", "  rules:\n  - {}\n", ns="foo"),
            policy(
                "gw-only",
                "  targetRefs:\n  - {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n  rules:\n  - {}\n",
            ),
        ]
    )
    (cfg,) = rbac_configs(yaml)
    assert list(cfg.rules.policies) == ["ns[istio-system]-policy[mesh-deny]-rule[0]"]


def tcp_push(yaml: str) -> PushContext:
    svc = Service(
        hostname="mysqldb.default.svc.cluster.local",
        namespace="default",
        name="mysqldb",
        ports=(ServicePort("tcp", 3306, Protocol.TCP, 3306),),
        addresses=("10.96.0.20",),
        selector={"app": "mysqldb"},
    )
    ep = Endpoint(
        address="10.244.0.30",
        port=3306,
        service_port_name="tcp",
        hostname=svc.hostname,
        namespace="default",
        labels={"app": "mysqldb", "version": "v1"},
        tls_mode="istio",
    )
    return PushContext(parse_configs(yaml), [svc], [ep])


def tcp_rbac_configs(yaml: str) -> list[tcp_rbac.RBAC]:
    from pistio.pilot.model.proxy import parse_node_id

    proxy = parse_node_id(
        "sidecar~10.244.0.30~mysqldb-v1-0.default~default.svc.cluster.local",
        {"NAMESPACE": "default", "LABELS": {"app": "mysqldb", "version": "v1"}},
    )
    lst = inbound(push=tcp_push(yaml), proxy=proxy)
    chains = chains_for_port(lst, 3306)
    assert chains
    out = []
    for chain in chains:
        names = [f.name for f in chain.filters]
        assert names[-1] == "envoy.filters.network.tcp_proxy"
        out.append(
            [
                unpack(f.typed_config)
                for f in chain.filters
                if f.name == "envoy.filters.network.rbac"
            ]
        )
    assert all(o == out[0] for o in out)
    return out[0]


def test_tcp_allow_with_http_fields_allows_nothing() -> None:
    # Istio: an ALLOW rule using HTTP-only fields is dropped on TCP chains → deny all.
    yaml = policy(
        "http-only", "  rules:\n  - to:\n    - operation: {methods: [GET], ports: ['3306']}\n"
    )
    (cfg,) = tcp_rbac_configs(yaml)
    assert cfg.stat_prefix == "tcp."
    assert cfg.rules.action == rbac_pb2.RBAC.ALLOW
    assert dict(cfg.rules.policies) == {}


def test_tcp_deny_with_http_fields_keeps_tcp_fields() -> None:
    # Istio: a DENY rule drops only the HTTP-only terms (denying more, never less).
    yaml = policy(
        "deny",
        "  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [GET], ports: ['3306']}\n",
    )
    (cfg,) = tcp_rbac_configs(yaml)
    got = as_dict(cfg.rules.policies["ns[default]-policy[deny]-rule[0]"])
    assert got["permissions"] == [
        {"andRules": {"rules": [{"orRules": {"rules": [{"destinationPort": 3306}]}}]}}
    ]


def test_tcp_allow_by_principal_and_namespace() -> None:
    body = """  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-ratings"]
        namespaces: ["default"]
"""
    (cfg,) = tcp_rbac_configs(policy("tcp", body))
    got = as_dict(cfg.rules.policies["ns[default]-policy[tcp]-rule[0]"])
    assert got["principals"][0]["andIds"]["ids"][0] == {
        "orIds": {
            "ids": [
                {
                    "authenticated": {
                        "principalName": {
                            "exact": "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"
                        }
                    }
                }
            ]
        }
    }


def test_invalid_values_drop_allow_rule_only() -> None:
    # Validation refuses bad ports before generation: build the model directly.
    from pistio.api.security import Operation, Rule, RuleTo
    from pistio.pilot.security.authz_model import ALLOW, DENY, RuleError, RuleModel

    bad = Rule(to=[RuleTo(operation=Operation(ports=["99999"]))])
    try:
        RuleModel.from_rule(bad, "default").generate(False, ALLOW)
        raise AssertionError("ALLOW must refuse the rule")
    except RuleError:
        pass
    deny = RuleModel.from_rule(bad, "default").generate(False, DENY)
    assert as_dict(deny)["permissions"] == [{"andRules": {"rules": [{"any": True}]}}]
