"""Data-plane TLS: SDS secrets, ``ssl.SSLContext``s per secret version, TLS termination on
listener filter chains (``DownstreamTlsContext``), TLS origination to upstream hosts
(``UpstreamTlsContext``), peer certificate facts and ``x-forwarded-client-cert``.

- :mod:`.secrets`: the SDS names pistio resolves (Istio's ``default``, ``ROOTCA``,
  ``file-cert:<cert>~<key>``, ``file-root:<ca>``), their compiled records, and the
  ``Secret`` protos that carry them to the workers and into ``/config_dump`` (redacted);
- :mod:`.secret_source`: the agent's resolution of those names (SecretManager, files);
- :mod:`.context`: server and client ``SSLContext``s, built once per secret version;
- :mod:`.peer`: the verified peer certificate's facts and SAN matching;
- :mod:`.downstream` / :mod:`.upstream`: handshakes on accepted and outgoing connections;
- :mod:`.xfcc`: the HTTP connection manager's ``x-forwarded-client-cert`` handling.
"""
