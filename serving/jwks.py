"""Fetching an issuer's allowlisted ``jku`` JWKS: https only, public addresses, bounded.

Only URLs that are on the issuer's allowlist reach this module. Even then the host
must resolve to public addresses only (no loopback, private, link-local or metadata
addresses) and the connection goes to the address that was checked (TLS verifies the
certificate for the host name), the fetch has a deadline and a size cap, redirects are
not followed and results (good or bad) are cached so a flood of tokens cannot make
Tonle a proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx

from serving.issuers import JwksError, VerifyKey, check_jku_url, is_public_address, parse_jwks

__all__ = ["JkuFetcher"]

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


@dataclass
class _Entry:
    keys: tuple[VerifyKey, ...]
    expires: float
    refreshed: float


class JkuFetcher:
    """Cached, bounded fetches of allowlisted JWKS URLs.

    Args:
        timeout_s: deadline for resolving and fetching one URL.
        ttl_s: how long fetched keys are trusted before a refetch.
        failure_ttl_s: how long a failed fetch is remembered (no retry storm).
        refresh_interval_s: minimum time between refetches for an unknown ``kid``.
        max_bytes: largest JWKS document accepted.
        transport: httpx transport (tests inject a mock; production uses the default).
        resolver: host -> addresses (tests inject one; production uses DNS).
    """

    def __init__(
        self,
        *,
        timeout_s: float = 2.0,
        ttl_s: float = 300.0,
        failure_ttl_s: float = 30.0,
        refresh_interval_s: float = 60.0,
        max_bytes: int = 64 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.failure_ttl_s = failure_ttl_s
        self.refresh_interval_s = refresh_interval_s
        self.max_bytes = max_bytes
        self._transport = transport
        self._resolver = resolver or _resolve
        self._cache: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def keys(self, url: str, *, refresh: bool = False) -> tuple[VerifyKey, ...]:
        """Keys published at ``url`` (cached); empty when they cannot be fetched.

        Args:
            url: an allowlisted ``jku`` URL.
            refresh: the cached keys lack the wanted ``kid``; refetch if allowed.
        """
        entry = self._usable(url, refresh)
        if entry is not None:
            return entry.keys
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            entry = self._usable(url, refresh)
            if entry is not None:
                return entry.keys
            now = time.monotonic()
            try:
                keys = await asyncio.wait_for(self._fetch(url), self.timeout_s)
                ttl = self.ttl_s
            except (TimeoutError, OSError, httpx.HTTPError, JwksError, ValueError) as exc:
                logger.warning("jku fetch failed: %s", type(exc).__name__)
                keys, ttl = (), self.failure_ttl_s
            self._cache[url] = _Entry(keys=keys, expires=now + ttl, refreshed=now)
            return keys

    def _usable(self, url: str, refresh: bool) -> _Entry | None:
        entry = self._cache.get(url)
        now = time.monotonic()
        if entry is None or now >= entry.expires:
            return None
        if refresh and now - entry.refreshed >= self.refresh_interval_s:
            return None
        return entry

    async def _fetch(self, url: str) -> tuple[VerifyKey, ...]:
        check_jku_url(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        addresses = await anyio.to_thread.run_sync(self._resolver, host, parts.port or 443)
        if not addresses or not all(is_public_address(a) for a in addresses):
            raise JwksError("jku host resolves to a non-public address")
        # Connect to the address just checked (no second DNS answer can swap in a
        # private one); TLS still verifies the certificate for the host name.
        pinned = ipaddress.ip_address(addresses[0].split("%", 1)[0])
        netloc = f"[{pinned}]" if pinned.version == 6 else str(pinned)
        if parts.port:
            netloc += f":{parts.port}"
        target = parts._replace(netloc=netloc).geturl()
        headers = {"Accept": "application/json", "Host": parts.netloc}
        async with (
            httpx.AsyncClient(
                transport=self._transport,
                timeout=self.timeout_s,
                follow_redirects=False,
                trust_env=False,
            ) as client,
            client.stream(
                "GET", target, headers=headers, extensions={"sni_hostname": host}
            ) as response,
        ):
            if response.status_code != 200:
                raise JwksError(f"jku answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > self.max_bytes:
                    raise JwksError("jku document too large")
        document: Any = json.loads(body)
        return parse_jwks(document)
