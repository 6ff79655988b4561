"""A client of Istio's ``IstioCertificateService`` (the agent's ``CitadelClient``): one TLS
channel per call, trusting the configured root (re-read every time, so a rotated root file
is picked up), the pod token as ``authorization: Bearer``."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

from pistio.security import ca_proto
from pistio.security.ca_proto import ISTIOD_DNS_NAMES

CALL_TIMEOUT = 10.0


class CaClient:
    def __init__(self, address: str, *, root_cert: str | Path | None = None,
                 token_file: str | Path | None = None, cluster_id: str = "Kubernetes",
                 server_name: str | None = None, insecure: bool = False) -> None:
        self.address = address
        self.root_cert = Path(root_cert) if root_cert else None
        self.token_file = Path(token_file) if token_file else None
        self.cluster_id = cluster_id
        self.insecure = insecure
        self.server_name = server_name or _default_server_name(address)

    def _channel(self) -> grpc.aio.Channel:
        if self.insecure:
            return grpc.aio.insecure_channel(self.address)
        roots = self.root_cert.read_bytes() if self.root_cert else None
        options = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(self.address, grpc.ssl_channel_credentials(roots),
                                       options=options)

    def token(self) -> str:
        # Read each time: the node refreshes the file before the token expires.
        return self.token_file.read_text().strip() if self.token_file else ""

    async def create_certificate(self, csr_pem: bytes, ttl: float) -> list[str]:
        """The signed chain (leaf first); :class:`grpc.aio.AioRpcError` on refusal."""
        request = ca_proto.IstioCertificateRequest(csr=csr_pem.decode(),
                                                   validity_duration=int(ttl))
        request.metadata.CopyFrom(struct_pb2.Struct())
        request.metadata.update({"ClusterID": self.cluster_id})
        metadata = []
        token = self.token()
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        if self.cluster_id:
            metadata.append(("clusterid", self.cluster_id))
        async with self._channel() as channel:
            call = channel.unary_unary(
                ca_proto.CREATE_CERTIFICATE,
                request_serializer=ca_proto.IstioCertificateRequest.SerializeToString,
                response_deserializer=ca_proto.IstioCertificateResponse.FromString,
            )
            response = await call(request, metadata=metadata, timeout=CALL_TIMEOUT)
        return list(response.cert_chain)


def _default_server_name(address: str) -> str | None:
    """Reaching istiod by IP, Istio's agent verifies ``istiod.istio-system.svc``; the
    discovery's certificate carries both."""
    host = address.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if host in ("127.0.0.1", "::1") else ISTIOD_DNS_NAMES[0]
