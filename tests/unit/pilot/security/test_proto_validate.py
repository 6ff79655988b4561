"""The PGV checker used on generated config catches what Envoy would reject."""

from __future__ import annotations

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as tcp_rbac

from pistio.pilot.security.proto_validate import validate_message
from pistio.xds.any_codec import pack


def test_catches_missing_required_and_min_items() -> None:
    bad = tcp_rbac.RBAC()  # stat_prefix is required (min_len 1)
    bad.rules.policies["p"].CopyFrom(rbac_pb2.Policy())  # permissions/principals min_items 1
    errors = validate_message(bad)
    assert "RBAC.stat_prefix: length must be at least 1" in errors
    assert "RBAC.rules.policies[p].permissions: must have at least 1 item(s)" in errors
    assert "RBAC.rules.policies[p].principals: must have at least 1 item(s)" in errors


def test_follows_any_and_required_oneofs() -> None:
    jwt = jwt_pb2.JwtAuthentication()
    jwt.providers["p"].issuer = "x"  # no jwks source: the oneof is required
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="s")
    hcm.http_filters.add(name="envoy.filters.http.jwt_authn", typed_config=pack(jwt))
    errors = validate_message(hcm)
    assert any(
        "<JwtAuthentication>.providers[p]: one of jwks_source_specifier is required" in e
        for e in errors
    )


def test_valid_message_has_no_errors() -> None:
    rbac = tcp_rbac.RBAC(stat_prefix="tcp.")
    policy = rbac.rules.policies["p"]
    policy.permissions.add(any=True)
    policy.principals.add(any=True)
    assert validate_message(rbac) == []
