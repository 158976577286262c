"""Capability links for what a clinician's browser opens from a card (it has no JWT).

The explanation pages (``/ui/explain/...``), their images and the heatmap PNG
(``/v1/imaging/results/{id}/heatmap.png``) are opened from EHR cards in a browser
that carries no credentials. Each such link is signed: ``?exp=<unix seconds>&sig=<hex>``
where ``sig`` is HMAC-SHA256 over the path and ``exp`` (first 32 hex digits, 128 bits).
Other parameters (``lang``) change only presentation and are not signed.

The key is ``TONLE_LINK_SECRET`` (or the file ``TONLE_LINK_SECRET_FILE`` names), the
same for every worker and replica; the service refuses to start without one. During a
rotation ``TONLE_LINK_SECRET_PREVIOUS`` is still accepted for checking, so links already
in EHR cards keep opening, while new links are signed with the current key only.

Only in dev mode (``TONLE_DEV``) and the demo (``TONLE_DEMO_ISSUER_DIR``) may the key be
left unset: a random one is then created once and kept, in the clear, in the service
database, so that every worker on it signs and checks alike. Anyone who can read that
database can sign links, which is acceptable only for a loopback demo.

A tampered link (or one signed with an unknown key) is refused with 403 and an expired
one with 410, both with one identical body, before anything is looked up: a link
reveals nothing about which ids exist.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from serving.settings import Settings

__all__ = [
    "MISSING_KEY",
    "REFUSED_BODY",
    "LinkSigner",
    "Verdict",
    "page_capability",
    "refusal",
    "require_key",
    "signer",
    "verdict",
]

logger = logging.getLogger(__name__)

REFUSED_BODY = b'{"error":"invalid-or-expired-link"}'
_SECRET_NAME = "link-hmac-v1"  # noqa: S105 - the name of a row, not a secret
_SIG_HEX = 32
MISSING_KEY = (
    "TONLE_LINK_SECRET is not set. Outside dev mode and the demo the key signing the "
    "explanation-page and heatmap links must be configured, the same on every worker and "
    "replica: set TONLE_LINK_SECRET to 32 or more random characters (e.g. `python -c "
    "'import secrets; print(secrets.token_hex(32))'`), or TONLE_LINK_SECRET_FILE to the "
    "path of a file holding it (a Docker or Kubernetes secret)."
)

Verdict = Literal["ok", "invalid", "expired"]
_PAGE_ID = re.compile(r"^[0-9A-Za-z-]{8,64}$")  # a card uuid or an imaging result id


class LinkSigner:
    """Signs and checks capability links.

    Args:
        key: the HMAC key new links are signed with (at least 32 bytes).
        ttl: how long a link stays valid after it is made.
        previous: older keys still accepted by :meth:`check` (a key rotation), never
            used to sign.
    """

    def __init__(self, key: bytes, ttl: timedelta, previous: tuple[bytes, ...] = ()) -> None:
        for each in (key, *previous):
            if len(each) < 32:
                raise ValueError(f"a link key has {len(each)} bytes; at least 32 are needed")
        self._key = key
        self._keys = (key, *previous)
        self.ttl_s = int(ttl.total_seconds())

    @staticmethod
    def _sig(key: bytes, path: str, expires: int) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()[:_SIG_HEX]

    def sign(self, path: str, now: float | None = None) -> str:
        """``path?exp=...&sig=...`` with the current key, valid for :attr:`ttl_s` seconds
        from ``now``."""
        expires = int(now if now is not None else time.time()) + self.ttl_s
        return f"{path}?exp={expires}&sig={self._sig(self._key, path, expires)}"

    def check(self, path: str, params: Mapping[str, str], now: float | None = None) -> Verdict:
        """Whether ``params`` (``exp``, ``sig``) make a valid link to ``path``, signed with
        the current or a previous key."""
        exp, sig = params.get("exp", ""), params.get("sig", "")
        if not exp.isdigit() or len(exp) > 12 or len(sig) != _SIG_HEX:
            return "invalid"
        # Every key is tried (no early exit), so timing does not tell which one matched.
        matches = [hmac.compare_digest(self._sig(k, path, int(exp)), sig) for k in self._keys]
        if not any(matches):
            return "invalid"
        return "ok" if int(exp) > (now if now is not None else time.time()) else "expired"


def _generated_key_allowed(settings: Settings) -> bool:
    """Dev mode or the demo: the only places a key kept in the database is acceptable."""
    return settings.dev or settings.demo_issuer_dir is not None


def require_key(settings: Settings) -> None:
    """Refuse to start without a configured link key, outside dev mode and the demo.

    Raises:
        ValueError: no ``TONLE_LINK_SECRET`` (or ``TONLE_LINK_SECRET_FILE``) outside dev
            mode and the demo; the message says what to set.
    """
    if settings.link_secret is None and not _generated_key_allowed(settings):
        raise ValueError(MISSING_KEY)


def signer(runtime: Any) -> LinkSigner:
    """The running service's signer (made once per worker, kept in ``runtime.link_signer``).

    Raises:
        ValueError: no configured key outside dev mode and the demo (see :func:`require_key`).
        AuditUnavailable: dev mode or the demo without a key, and the database cannot be
            read.
    """
    made: LinkSigner | None = runtime.link_signer
    if made is not None:
        return made
    settings = runtime.settings
    require_key(settings)
    if settings.link_secret is not None:
        key = settings.link_secret.get_secret_value().encode()
    else:
        # Dev mode or the demo only: a generated key kept in the clear in the database
        # (whoever reads it can sign links), so that all workers agree on one key.
        key = bytes.fromhex(runtime.audit.service_secret(_SECRET_NAME))
        logger.warning(
            "link key generated and kept in the database (dev mode / demo only); "
            "set TONLE_LINK_SECRET or TONLE_LINK_SECRET_FILE anywhere else"
        )
    previous = settings.link_secret_previous
    made = LinkSigner(
        key,
        timedelta(days=settings.explanation_retention_days),
        previous=() if previous is None else (previous.get_secret_value().encode(),),
    )
    runtime.link_signer = made
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


def page_capability(body: Any) -> tuple[str, dict[str, str]] | None:
    """The explanation page a JSON body sent from it names, and that page's own signed
    link (``exp``, ``sig``): the capability of a call made by the page's script (its
    feedback form), whose own URL is not signed.

    ``{"card": id, "kind": "ncd" | "cxr", "exp": ..., "sig": ...}`` names
    ``/ui/explain/{id}`` (``kind`` left out: ``ncd``) or ``/ui/explain/cxr/{id}``;
    anything else names no page (None).
    """
    if not isinstance(body, dict):
        return None
    card, kind = body.get("card"), body.get("kind", "ncd")
    exp, sig = body.get("exp"), body.get("sig")
    if not (isinstance(card, str) and _PAGE_ID.match(card) and kind in ("ncd", "cxr")):
        return None
    if not (isinstance(exp, str) and isinstance(sig, str)):
        return None
    page = f"/ui/explain/cxr/{card}" if kind == "cxr" else f"/ui/explain/{card}"
    return page, {"exp": exp, "sig": sig}
