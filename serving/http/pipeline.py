"""The endpoint wrapper every audited route is built with.

``endpoint(scheme, handler)`` gives a Starlette endpoint that authenticates the caller,
runs ``handler`` (which parses its body strictly with :mod:`serving.body` and fills in
the :class:`~serving.http.audit.Exchange`), commits the audit row and only then
answers. A :class:`~serving.body.BadRequest` from the handler is a refused, audited
call; any other exception an audited error with ``on_error``'s answer.

What the exchange carries is committed in the row's one transaction (an NCD card's
explanation, a new chest X-ray read): when the commit fails the answer is 503 and
nothing of it is stored. A handler that must commit rows of its own before it answers
(one per image of a PACS study, each before its write-back) builds each with an
:class:`~serving.http.audit.Exchange` too and commits it with :func:`record_now`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving.audit.records import AuditRecord, Outcome
from serving.auth import AuthError
from serving.body import BadRequest
from serving.http.audit import Exchange, commit
from serving.http.identify import Scheme, authenticate, refusal, runtime_of
from serving.metrics import count_feedback, count_outcome, observe_answer

if TYPE_CHECKING:
    from serving.runtime import Runtime

__all__ = [
    "Answer",
    "Handler",
    "audit_unavailable",
    "endpoint",
    "internal_error",
    "pipeline_scheme",
    "record",
    "record_now",
    "route_of",
]

logger = logging.getLogger(__name__)


@dataclass
class Answer:
    """A handler's response and the outcome its audit row records.

    ``response`` may instead be made once the row is committed, from how long that
    commit took (ms): for a body that reports its own store time.
    """

    response: Response | Callable[[float], Response]
    outcome: Outcome
    reason: str | None = None


Handler = Callable[[Request, Exchange], Awaitable[Answer]]
ErrorAnswer = Callable[[Exchange], Answer]
# A refusal (401 / 403 / 410 / 503) as a browser page shows it, its status kept.
RefusalPage = Callable[[Request, Response], Response]


def internal_error(exchange: Exchange) -> Answer:
    """500 with no advice (REST)."""
    body = {"error": "internal-error", "advice": False, "request_id": exchange.request_id}
    return Answer(JSONResponse(body, status_code=500), "error", "internal-error")


def audit_unavailable() -> Response:
    """503: the audit row could not be committed, so nothing else may be answered."""
    return JSONResponse({"error": "audit-unavailable"}, status_code=503)


def route_of(request: Request) -> str:
    """The route template matched (``/cds-services/{service_id}``): a bounded label."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def endpoint(
    scheme: Scheme,
    service_id: str | Callable[[Request], str],
    handler: Handler,
    *,
    on_error: ErrorAnswer = internal_error,
    refusal_page: RefusalPage | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint running ``handler`` inside the pipeline.

    Args:
        scheme: how callers authenticate (``jwt``, ``api-key``, a signed ``link``,
            ``page-link``: the signed link of the page a JSON call comes from, or the
            operators' ``metrics-token``, ``metrics-token-or-api-key``).
        service_id: the audit rows' service id, or how to tell it from the request.
        handler: parses, answers and fills in the exchange; runs after authentication.
        on_error: the answer when ``handler`` raises something other than BadRequest.
        refusal_page: shows a refused caller's answer as a page (its status kept).
    """

    async def run(request: Request) -> Response:
        runtime = runtime_of(request)
        sid = service_id if isinstance(service_id, str) else service_id(request)
        exchange = Exchange(sid)
        try:
            exchange.caller = await authenticate(runtime, request, scheme)
        except AuthError as exc:
            refused = refusal(exc, route_of(request))
            return refused if refusal_page is None else refusal_page(request, refused)
        try:
            answer = await handler(request, exchange)
        except BadRequest as exc:
            answer = Answer(exc.response(), "refused", exc.reason)
        except Exception:
            logger.exception("request %s failed; no advice", exchange.request_id)
            answer = on_error(exchange)
        committing = time.perf_counter()
        if not await record(runtime, exchange, answer.outcome, answer.reason):
            return audit_unavailable()
        response = answer.response
        if not isinstance(response, Response):
            response = response((time.perf_counter() - committing) * 1000.0)
        response.headers["X-Request-Id"] = exchange.request_id
        return response

    run.__dict__[_MARK] = scheme
    return run


_MARK = "tonle_pipeline_scheme"  # set on every endpoint made here


def pipeline_scheme(route_endpoint: object) -> Scheme | None:
    """How callers of ``route_endpoint`` authenticate, if :func:`endpoint` made it (else
    None): the route table test checks every route with it."""
    scheme: Scheme | None = getattr(route_endpoint, "__dict__", {}).get(_MARK)
    return scheme


async def record(
    runtime: Runtime, exchange: Exchange, outcome: Outcome, reason: str | None = None
) -> bool:
    """Commit ``exchange``'s row (and what it carries) ending in ``outcome`` and count
    it; False when the store is unavailable (answer 503, nothing of it stored)."""
    row = exchange.row(outcome, reason)
    if not await commit(runtime, row):
        count_outcome(exchange.service_id, "error", "audit-unavailable")
        return False
    _counted(exchange, row)
    return True


def record_now(
    runtime: Runtime, exchange: Exchange, outcome: Outcome, reason: str | None = None
) -> None:
    """:func:`record` from a worker thread, for a row a handler commits before it goes
    on (blocking).

    Raises:
        Exception: the row could not be committed (nothing of it is stored); the
            handler stops there and its own answer is an error.
    """
    row = exchange.row(outcome, reason)
    if runtime.audit is None:
        raise RuntimeError("no audit store")
    try:
        runtime.audit.record(row)
    except Exception:
        count_outcome(exchange.service_id, "error", "audit-unavailable")
        raise
    _counted(exchange, row)


def _counted(exchange: Exchange, row: AuditRecord) -> None:
    """Count a committed row on ``/metrics`` and run the exchange's advice hooks."""
    count_outcome(exchange.service_id, row.outcome, row.reason)
    observe_answer(row)
    for fb in row.feedback:
        count_feedback(fb)
    if row.outcome == "advice":
        for hook in exchange.after_advice:
            hook()
