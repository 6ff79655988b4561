"""Istio's CA API (``security/v1alpha1/ca.proto``, package ``istio.v1.auth``), built at import
time from a ``FileDescriptorProto`` (no protoc step):

    message IstioCertificateRequest { string csr = 1; int64 validity_duration = 3;
                                      google.protobuf.Struct metadata = 4; }
    message IstioCertificateResponse { repeated string cert_chain = 1; }
    service IstioCertificateService {
      rpc CreateCertificate(IstioCertificateRequest) returns (IstioCertificateResponse);
    }

Field 2 (``subject_id``) was removed from Istio's proto and is reserved here as well.
"""

from __future__ import annotations

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,  # noqa: F401  (registers google/protobuf/struct.proto)
)

PACKAGE = "istio.v1.auth"
# The names istiod's serving certificate carries (what a client checks the CA's host against).
ISTIOD_DNS_NAMES = ("istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local")
SERVICE = f"{PACKAGE}.IstioCertificateService"
CREATE_CERTIFICATE = f"/{SERVICE}/CreateCertificate"

_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(
        name="security/v1alpha1/ca.proto", package=PACKAGE, syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    fd.options.go_package = "istio.io/api/security/v1alpha1"
    req = fd.message_type.add(name="IstioCertificateRequest")
    req.field.add(name="csr", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL,
                  json_name="csr")
    req.field.add(name="validity_duration", number=3, type=_F.TYPE_INT64,
                  label=_F.LABEL_OPTIONAL, json_name="validityDuration")
    req.field.add(name="metadata", number=4, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                  type_name=".google.protobuf.Struct", json_name="metadata")
    req.reserved_range.add(start=2, end=3)
    resp = fd.message_type.add(name="IstioCertificateResponse")
    resp.field.add(name="cert_chain", number=1, type=_F.TYPE_STRING, label=_F.LABEL_REPEATED,
                   json_name="certChain")
    svc = fd.service.add(name="IstioCertificateService")
    svc.method.add(name="CreateCertificate", input_type=f".{PACKAGE}.IstioCertificateRequest",
                   output_type=f".{PACKAGE}.IstioCertificateResponse")
    return fd


def _build():  # type: ignore[no-untyped-def]
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("security/v1alpha1/ca.proto")
    except KeyError:
        pool.Add(_file())
    req = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PACKAGE}.IstioCertificateRequest"))
    resp = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PACKAGE}.IstioCertificateResponse"))
    return req, resp


IstioCertificateRequest, IstioCertificateResponse = _build()

# Metadata keys Istio's CA reads from the request (security.ImpersonatedIdentity, CertSigner).
IMPERSONATED_IDENTITY = "ImpersonatedIdentity"
CERT_SIGNER = "CertSigner"
