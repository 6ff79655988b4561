"""JWKS fetched by the discovery (Istio's ``model.JwksResolver``, ``PILOT_JWT_ENABLE_REMOTE_JWKS``
at its default ``istiod``): proxies get the keys inline, never fetch them themselves.

- :meth:`JwksResolver.resolve` answers from the cache; on a miss it fetches synchronously
  within the rule's timeout (as istiod does on first use), so the first config a proxy
  gets already carries the keys;
- a key set that cannot be fetched is replaced by Istio's *fake JWKS* (one RSA key that no
  token is signed with): tokens from that issuer then fail verification (401) instead of
  passing unchecked; the entry is retried in the background;
- :meth:`JwksResolver.run` refreshes every entry each ``refresh_interval`` (Istio: 20 min)
  and retries failed ones each ``retry_interval``; when any key set changes it calls
  ``on_change`` (the discovery pushes). Entries unused for ``eviction`` are dropped.
- without ``jwksUri`` and ``jwks`` the issuer's OpenID discovery document
  (``<issuer>/.well-known/openid-configuration``) names the ``jwks_uri``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("pistio.jwks")

DEFAULT_TIMEOUT = 5.0
REFRESH_INTERVAL = 20 * 60.0
RETRY_INTERVAL = 1.0
EVICTION = 24 * 3600.0
MAX_BODY = 1 << 20
OPENID_SUFFIX = "/.well-known/openid-configuration"


class JwksError(Exception):
    pass


def fake_jwks(uri: str) -> str:
    """Istio's CreateFakeJwks: a well-formed key set no real token verifies against."""
    n = base64.urlsafe_b64encode(uri.encode()).rstrip(b"=").decode()
    return json.dumps({"keys": [{"e": "AQAB", "kid": "abc", "kty": "RSA", "n": n}]})


def _get(uri: str, timeout: float) -> bytes:
    if not uri.startswith(("http://", "https://")):
        raise JwksError(f"unsupported JWKS URI scheme: {uri}")
    request = urllib.request.Request(uri, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (scheme checked)
            if resp.status != 200:
                raise JwksError(f"{uri}: HTTP {resp.status}")
            return resp.read(MAX_BODY)
    except JwksError:
        raise
    except Exception as e:  # URLError, HTTPError, timeouts, TLS errors
        raise JwksError(f"{uri}: {e}") from None


def fetch_jwks(uri: str, timeout: float) -> str:
    """The key set at ``uri``, checked to be a JSON object with ``keys``."""
    body = _get(uri, timeout)
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise JwksError(f"{uri}: not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError(f"{uri}: no keys in JWKS")
    return body.decode()


def discover_jwks_uri(issuer: str, timeout: float) -> str:
    body = _get(issuer.rstrip("/") + OPENID_SUFFIX, timeout)
    try:
        uri = json.loads(body).get("jwks_uri", "")
    except (ValueError, AttributeError):
        uri = ""
    if not uri:
        raise JwksError(f"{issuer}: no jwks_uri in the OpenID discovery document")
    return uri


@dataclass
class _Entry:
    issuer: str
    uri: str
    timeout: float
    jwks: str = ""  # "" until a fetch succeeded
    fetched_at: float = 0.0
    attempted_at: float = 0.0
    last_used: float = 0.0
    failures: int = 0


class JwksResolver:
    """Cache of JWKS by (issuer, jwksUri), thread-safe (generation may run anywhere)."""

    def __init__(
        self,
        on_change: Callable[[], None] | None = None,
        refresh_interval: float = REFRESH_INTERVAL,
        retry_interval: float = RETRY_INTERVAL,
        eviction: float = EVICTION,
    ) -> None:
        self.on_change = on_change
        self.refresh_interval = refresh_interval
        self.retry_interval = retry_interval
        self.eviction = eviction
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def resolve(self, issuer: str, jwks_uri: str, timeout: float | None = None) -> str:
        """The JWKS to inline for a rule without inline ``jwks``."""
        key = (issuer, jwks_uri)
        now = time.time()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(issuer, jwks_uri, timeout or DEFAULT_TIMEOUT)
            entry.last_used = now
        if not entry.jwks and not entry.attempted_at:
            self._fetch(entry)
        return entry.jwks or fake_jwks(jwks_uri or issuer)

    def _fetch(self, entry: _Entry) -> bool:
        """Fetch one entry; True when its keys changed."""
        entry.attempted_at = time.time()
        try:
            uri = entry.uri or discover_jwks_uri(entry.issuer, entry.timeout)
            jwks = fetch_jwks(uri, entry.timeout)
        except JwksError as e:
            entry.failures += 1
            log.warning("jwks: cannot fetch keys of issuer %s: %s", entry.issuer, e)
            return False
        entry.failures = 0
        entry.fetched_at = entry.attempted_at
        changed = jwks != entry.jwks
        entry.jwks = jwks
        return changed

    def due(self, now: float) -> list[_Entry]:
        """Entries to fetch now: failed ones on the retry schedule (doubling, capped at the
        refresh interval), good ones each refresh interval. Evicts unused entries."""
        out = []
        with self._lock:
            for key, e in list(self._entries.items()):
                if now - e.last_used > self.eviction:
                    del self._entries[key]
                    continue
                if not e.jwks:
                    wait = min(
                        self.retry_interval * 2 ** max(e.failures - 1, 0), self.refresh_interval
                    )
                    if now - e.attempted_at >= wait:
                        out.append(e)
                elif now - e.fetched_at >= self.refresh_interval:
                    out.append(e)
        return out

    def refresh_once(self) -> bool:
        """Fetch what is due (blocking); True when any key set changed."""
        changed = False
        for entry in self.due(time.time()):
            changed |= self._fetch(entry)
        return changed

    async def run(self) -> None:
        """Background refresher: fetches in a thread, notifies ``on_change``."""
        tick = max(min(self.retry_interval, self.refresh_interval), 0.05)
        while True:
            await asyncio.sleep(tick)
            try:
                changed = await asyncio.to_thread(self.refresh_once)
            except Exception:
                log.exception("jwks: refresh failed")
                continue
            if changed and self.on_change is not None:
                log.info("jwks: keys changed, pushing")
                self.on_change()


_default = JwksResolver()


def default_resolver() -> JwksResolver:
    """The resolver of push contexts built without one (tests, tools)."""
    return _default
