"""Capability links for what a clinician's browser opens from a card (it has no JWT).

The explanation pages (``/ui/explain/...``), their images and the heatmap PNG
(``/v1/imaging/results/{id}/heatmap.png``) are opened from EHR cards in a browser
that carries no credentials. Each such link is signed: ``?exp=<unix seconds>&sig=<hex>``
where ``sig`` is HMAC-SHA256 over the path and ``exp`` (first 32 hex digits, 128 bits).
Other parameters (``lang``) change only presentation and are not signed.

The key is ``TONLE_LINK_SECRET`` or, when unset, a random key created once in the
service database, so every worker and replica on it signs and checks alike. A tampered
link is refused with 403 and an expired one with 410, both with one identical body,
before anything is looked up: a link reveals nothing about which ids exist.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["REFUSED_BODY", "LinkSigner", "Verdict", "refusal", "signer", "verdict"]

REFUSED_BODY = b'{"error":"invalid-or-expired-link"}'
_SECRET_NAME = "link-hmac-v1"  # noqa: S105 - the name of a row, not a secret
_SIG_HEX = 32

Verdict = Literal["ok", "invalid", "expired"]


class LinkSigner:
    """Signs and checks capability links.

    Args:
        key: the HMAC key (at least 32 bytes).
        ttl: how long a link stays valid after it is made.
    """

    def __init__(self, key: bytes, ttl: timedelta) -> None:
        if len(key) < 32:
            raise ValueError(f"the link key has {len(key)} bytes; at least 32 are needed")
        self._key = key
        self.ttl_s = int(ttl.total_seconds())

    def _sig(self, path: str, expires: int) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:_SIG_HEX]

    def sign(self, path: str, now: float | None = None) -> str:
        """``path?exp=...&sig=...``, valid for :attr:`ttl_s` seconds from ``now``."""
        expires = int(now if now is not None else time.time()) + self.ttl_s
        return f"{path}?exp={expires}&sig={self._sig(path, expires)}"

    def check(self, path: str, params: Mapping[str, str], now: float | None = None) -> Verdict:
        """Whether ``params`` (``exp``, ``sig``) make a valid link to ``path``."""
        exp, sig = params.get("exp", ""), params.get("sig", "")
        if not exp.isdigit() or len(exp) > 12 or len(sig) != _SIG_HEX:
            return "invalid"
        if not hmac.compare_digest(self._sig(path, int(exp)), sig):
            return "invalid"
        return "ok" if int(exp) > (now if now is not None else time.time()) else "expired"


def signer(runtime: Any) -> LinkSigner:
    """The running service's signer (made once per worker, kept in ``runtime.extras``).

    Raises:
        AuditUnavailable: no ``TONLE_LINK_SECRET`` and the database cannot be read.
    """
    made: LinkSigner | None = runtime.extras.get("link_signer")
    if made is not None:
        return made
    settings = runtime.settings
    if settings.link_secret is not None:
        key = settings.link_secret.get_secret_value().encode()
    else:
        key = bytes.fromhex(runtime.audit.service_secret(_SECRET_NAME))
    made = LinkSigner(key, timedelta(days=settings.explanation_retention_days))
    runtime.extras["link_signer"] = made
    return made


def refusal(verdict: Verdict) -> Response:
    """The answer to a link that is not ``ok``: 403 (tampered) or 410 (expired), one body."""
    return Response(
        REFUSED_BODY,
        status_code=410 if verdict == "expired" else 403,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def verdict(request: Request) -> Verdict:
    """Whether the request's own URL is a valid signed link."""
    runtime = request.app.state.runtime
    return signer(runtime).check(request.url.path, request.query_params)
