"""Security config generation in the discovery (Istio's ``pilot/pkg/security``).

- :mod:`.policies` — which PeerAuthentication, RequestAuthentication and AuthorizationPolicy
  resources apply to a workload (root namespace, namespace, selector, targetRefs);
- :mod:`.peer_authn` — the effective mTLS mode per workload port and the inbound
  ``DownstreamTlsContext`` / filter chain match options it implies;
- :mod:`.authz_model`, :mod:`.authz_builder` — AuthorizationPolicy → Envoy RBAC
  (``envoy.filters.http.rbac``, ``envoy.filters.network.rbac``) and CUSTOM → ext_authz;
- :mod:`.jwt_authn`, :mod:`.jwks` — RequestAuthentication → ``envoy.filters.http.jwt_authn``
  with the JWKS fetched, cached and refreshed by the discovery;
- :mod:`.proto_validate` — protoc-gen-validate rules of Envoy's protos, checked on what we
  generate (tests, and ``validate_message`` for anyone who wants to assert it).
"""
