"""Identity and certificates: SPIFFE ids, the CA of the discovery (istiod's Citadel), pod
tokens that prove a caller's service account, and Istio's certificate-signing API."""
