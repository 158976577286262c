"""The endpoint wrapper every audited route is built with.

``endpoint(scheme, handler)`` gives a Starlette endpoint that authenticates the caller,
runs ``handler`` (which parses its body strictly with :mod:`serving.body` and fills in
the :class:`~serving.http.audit.Exchange`), commits the audit row and only then
answers. A :class:`~serving.body.BadRequest` from the handler is a refused, audited
call; any other exception an audited error with ``on_error``'s answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving.audit.records import Outcome
from serving.auth import AuthError
from serving.body import BadRequest
from serving.http.audit import Exchange, commit
from serving.http.identify import Scheme, authenticate, refusal, runtime_of
from serving.metrics import count_outcome, observe_answer

__all__ = ["Answer", "Handler", "audit_unavailable", "endpoint", "internal_error", "route_of"]

logger = logging.getLogger(__name__)


@dataclass
class Answer:
    """A handler's response and the outcome its audit row records."""

    response: Response
    outcome: Outcome
    reason: str | None = None


Handler = Callable[[Request, Exchange], Awaitable[Answer]]
ErrorAnswer = Callable[[Exchange], Answer]


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
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint running ``handler`` inside the pipeline.

    Args:
        scheme: how callers authenticate (``jwt`` or ``api-key``).
        service_id: the audit rows' service id, or how to tell it from the request.
        handler: parses, answers and fills in the exchange; runs after authentication.
        on_error: the answer when ``handler`` raises something other than BadRequest.
    """

    async def run(request: Request) -> Response:
        runtime = runtime_of(request)
        sid = service_id if isinstance(service_id, str) else service_id(request)
        exchange = Exchange(sid)
        try:
            exchange.caller = await authenticate(runtime, request, scheme)
        except AuthError as exc:
            return refusal(exc, route_of(request))
        try:
            answer = await handler(request, exchange)
        except BadRequest as exc:
            answer = Answer(exc.response(), "refused", exc.reason)
        except Exception:
            logger.exception("request %s failed; no advice", exchange.request_id)
            answer = on_error(exchange)
        row = exchange.row(answer.outcome, answer.reason)
        if not await commit(runtime, row):
            count_outcome(exchange.service_id, "error", "audit-unavailable")
            return audit_unavailable()
        count_outcome(exchange.service_id, answer.outcome, answer.reason)
        observe_answer(row)
        answer.response.headers["X-Request-Id"] = exchange.request_id
        return answer.response

    return run
