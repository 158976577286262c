"""Authentication dispatch: the one place a request becomes a :class:`Caller` or a refusal.

* ``jwt``: CDS Hooks bearer tokens (:class:`serving.auth.CdsAuthenticator`), ``aud`` being
  the public URL of the exact path called.
* ``api-key``: ``X-API-Key`` or ``Authorization: ApiKey <key>``
  (:class:`serving.auth.ApiKeyAuthenticator`).
* ``link``: a signed capability link (:mod:`serving.ui.links`, ``?exp=&sig=`` over the
  exact path), opened by a browser without credentials, in dev mode too.
* ``page-link``: a JSON call from a page opened by signed link (its feedback form): the
  body names the page and carries that page's ``exp`` and ``sig``
  (:func:`serving.ui.links.page_capability`); in dev mode too.
* ``metrics-token``: ``Authorization: Bearer <TONLE_METRICS_TOKEN>``, the operators'
  routes (``/metrics``, ``/readyz/detail``): the operator caller, of no tenant. No token
  configured: everyone is refused.
* ``metrics-token-or-api-key``: the metrics token (the operator) or else an API key (its
  tenant's caller), for ``/ui/monitor``, which shows an API key's caller its own tenant
  only.
* dev mode (``TONLE_DEV``): no authenticators, every ``jwt``, ``api-key`` and
  metrics-token caller is the dev caller; the app admits loopback clients only
  (:class:`serving.app.LoopbackOnly`).

Every refusal is an :class:`~serving.auth.AuthError`; :func:`refusal` turns it into the
answer: 503 when the store behind authentication is down, 403 / 410 (one body) for a
link that is tampered with or expired, else the one 401 body.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving.audit.tables import AuditUnavailable
from serving.auth import AuthError, AuthUnavailable, api_key_from_headers, unauthorized_response
from serving.body import BadRequest, read_json
from serving.http.caller import DEV_CALLER, OPERATOR_CALLER, Caller, link_caller
from serving.metrics import count_refusal
from serving.ui import links

if TYPE_CHECKING:
    from serving.runtime import ApiKeyAuth, Runtime
    from serving.settings import Settings

__all__ = ["LinkRefused", "Scheme", "api_key_caller", "authenticate", "refusal", "runtime_of"]

logger = logging.getLogger(__name__)

Scheme = Literal["jwt", "api-key", "link", "page-link", "metrics-token", "metrics-token-or-api-key"]
_LOG_EVERY_S = 60.0


class LinkRefused(AuthError):
    """A signed link that is tampered with, for another path, or expired."""

    def __init__(self, verdict: links.Verdict) -> None:
        super().__init__(f"link-{verdict}")
        self.verdict = verdict


def runtime_of(request: Request) -> Runtime:
    """The :class:`~serving.runtime.Runtime` the service attached to the app."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def authenticate(runtime: Runtime, request: Request, scheme: Scheme) -> Caller:
    """The caller of ``request`` under ``scheme``.

    Raises:
        AuthError: refused (answer 401).
        AuthUnavailable: (an AuthError) the replay or key store is down (answer 503).
        LinkRefused: (an AuthError) ``link`` / ``page-link``: not a valid signed link
            (answer 403 / 410).
    """
    if scheme == "link":
        return await _link_holder(request)
    if scheme == "page-link":
        return await _page_link_holder(request)
    if scheme == "api-key":
        return api_key_caller(runtime.api_keys, request, dev=runtime.settings.dev)
    if scheme == "metrics-token":
        return _metrics_token_holder(runtime.settings, request)
    if scheme == "metrics-token-or-api-key":
        try:
            return _metrics_token_holder(runtime.settings, request)
        except AuthError:
            return api_key_caller(runtime.api_keys, request, dev=runtime.settings.dev)
    if runtime.cds_auth is None:
        return _dev_caller(dev=runtime.settings.dev)
    endpoint = runtime.settings.public_url.rstrip("/") + request.url.path
    caller: Caller = await runtime.cds_auth.authenticate(
        request.headers.get("authorization"), endpoint
    )
    return caller


def api_key_caller(keys: ApiKeyAuth | None, request: Request, *, dev: bool) -> Caller:
    """The REST caller: its API key checked by ``keys`` (None only in dev mode).

    Raises:
        AuthError: refused (answer 401).
        AuthUnavailable: (an AuthError) the key store is down (answer 503).
    """
    if keys is None:
        return _dev_caller(dev=dev)
    caller: Caller = keys.authenticate(api_key_from_headers(request.headers))
    return caller


async def _link_holder(request: Request) -> Caller:
    """The holder of a valid signed link to the request's own path (its tenant unknown
    until what the link names is found); checked before anything is looked up."""
    return await _holder(lambda: links.verdict(request))


async def _page_link_holder(request: Request) -> Caller:
    """The holder of a valid signed link to the page the JSON body names: a body that
    cannot be read or names no page is an invalid link (403), checked before anything
    is looked up. The parsed body is kept for the handler (:func:`serving.body.read_json`)."""
    try:
        named = links.page_capability(await read_json(request))
    except BadRequest as exc:
        raise LinkRefused("invalid") from exc
    if named is None:
        raise LinkRefused("invalid")
    page, params = named
    runtime = runtime_of(request)
    return await _holder(lambda: links.signer(runtime).check(page, params))


async def _holder(verdict: Callable[[], links.Verdict]) -> Caller:
    try:
        found = await run_in_threadpool(verdict)
    except AuditUnavailable as exc:  # dev mode / demo: the generated key's database
        raise AuthUnavailable("link-key-unavailable") from exc
    if found != "ok":
        raise LinkRefused(found)
    return link_caller()


def _metrics_token_holder(settings: Settings, request: Request) -> Caller:
    """The operator: ``Authorization: Bearer`` with the configured metrics token,
    compared in constant time (dev mode: the dev caller).

    Raises:
        AuthError: no token configured, none sent, or another one (answer 401).
    """
    if settings.dev:
        return DEV_CALLER
    token = settings.metrics_token
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer" or not sent:
        raise AuthError("metrics-token")
    if not hmac.compare_digest(sent.strip().encode(), token.get_secret_value().encode()):
        raise AuthError("metrics-token")
    return OPERATOR_CALLER


def _dev_caller(*, dev: bool) -> Caller:
    """Dev mode has no authenticators: everyone is the dev caller. The app admits only
    loopback clients there (:class:`serving.app.LoopbackOnly`) and the service refuses
    to start on another address."""
    if not dev:
        raise AuthError("no-authenticator")
    return DEV_CALLER


class _RateLimitedLog:
    """At most one log line per minute about refused callers, with how many there were."""

    def __init__(self) -> None:
        self._last = 0.0
        self._count = 0

    def note(self, route: str, reason: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= _LOG_EVERY_S:
            logger.warning(
                "refused %d caller(s) in the last %.0f s (latest: %s on %s)",
                self._count,
                now - self._last if self._last else 0.0,
                reason,
                route,
            )
            self._last, self._count = now, 0


_refusals = _RateLimitedLog()


def refusal(exc: AuthError, route: str) -> Response:
    """The answer to a refused caller: 503 when authentication could not be checked
    (its store is down), 403 / 410 for a bad signed link, else the one 401 body.
    Counted, never a durable row: anyone can send refused calls, and each must not
    cost a disk commit."""
    reason = "auth-unavailable" if isinstance(exc, AuthUnavailable) else exc.reason
    count_refusal(route, reason)
    if isinstance(exc, AuthUnavailable):
        return JSONResponse({"error": "auth-unavailable"}, status_code=503)
    _refusals.note(route, reason)
    if isinstance(exc, LinkRefused):
        return links.refusal(exc.verdict)
    return unauthorized_response()
