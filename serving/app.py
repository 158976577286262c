"""The ASGI app mounted on the BentoML service: CDS Hooks, REST, imaging and UI routes.

Route handlers find the :class:`~serving.runtime.Runtime` at
``request.app.state.runtime``; the service sets it before serving. Routes defined here
take precedence over BentoML's own pages (its Swagger index at ``/`` and ``/docs.json``),
so ``/`` is Tonle's front page and ``/metrics`` Tonle's authenticated exposition.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from serving import cds_hooks, rest
from serving.auth import AuthError
from serving.http.audit import Exchange
from serving.http.caller import is_loopback
from serving.http.identify import refusal, runtime_of
from serving.http.pipeline import Answer, endpoint
from serving.imaging import routes as imaging_routes
from serving.metrics import RouteMetrics, exposition
from serving.readiness import readiness_detail
from serving.settings import Settings
from serving.ui import routes as ui_routes

__all__ = ["LoopbackOnly", "create_app"]


async def list_models(request: Request) -> JSONResponse:
    """The verified models this service loaded, with their identity."""
    runtime = runtime_of(request)
    return JSONResponse(
        {
            "models": [
                {
                    "name": stored.metadata.name,
                    "version": stored.metadata.version,
                    "task": stored.metadata.task,
                    "sha256": stored.metadata.sha256,
                }
                for stored in runtime.models.values()
            ]
        }
    )


async def _metrics(request: Request, exchange: Exchange) -> Answer:
    """``GET /metrics``: Prometheus text, for the holder of the metrics token only.
    Audited like every answer (service ``metrics``, outcome ``read``): a row per scrape,
    e.g. one per replica every 15 s."""
    body, content_type = await run_in_threadpool(exposition, runtime_of(request))
    return Answer(Response(body, media_type=content_type), "read")


metrics = endpoint("metrics-token", "metrics", _metrics)


async def not_found(request: Request) -> Response:
    """What BentoML would otherwise serve here (its own API description)."""
    return JSONResponse({"error": "not-found"}, status_code=404)


class LoopbackOnly:
    """Dev mode and the demo: refuse every client that is not on a loopback address.

    There the callers are not authenticated (dev) or anyone may mint a token (the demo
    EHR's token endpoint), which is safe only on the machine itself; the service also
    refuses to start on a non-loopback bind (:mod:`serving.service`).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and not is_loopback(client[0] if client else None):
            response = refusal(AuthError("not-loopback"), "non-loopback")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> Starlette:
    """A Starlette app; the service sets ``app.state.runtime`` before serving.

    Args:
        settings: Read for the CORS origins (``TONLE_CORS_ORIGINS``), dev/demo mode and
            the API docs switch; default from the environment.
    """
    settings = settings or Settings()
    routes: list[BaseRoute] = [
        *ui_routes.front_routes(settings),
        Route("/docs.json", not_found, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/readyz/detail", readiness_detail, methods=["GET"]),
        *imaging_routes.routes(),
        *cds_hooks.routes(),
        *rest.routes(),
        Route("/v1/models", list_models, methods=["GET"]),
        *ui_routes.routes(),
    ]
    middleware = [Middleware(RouteMetrics)]
    if settings.dev or settings.demo_issuer_dir is not None:
        middleware.append(Middleware(LoopbackOnly))
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-API-Key", "Accept-Language"],
                expose_headers=["X-Request-Id"],
                max_age=600,
            )
        )
    return Starlette(routes=routes, middleware=middleware)
