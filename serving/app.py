"""The ASGI app mounted on the BentoML service: CDS Hooks, REST, imaging and UI routes.

Route handlers find the :class:`~serving.runtime.Runtime` at
``request.app.state.runtime`` (contract C5); the service sets it before serving.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from serving import cds_hooks, rest
from serving.imaging import routes as imaging_routes
from serving.runtime import Runtime
from serving.settings import Settings
from serving.ui import routes as ui_routes

__all__ = ["create_app"]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def list_models(request: Request) -> JSONResponse:
    """The verified models this service loaded, with their identity."""
    runtime = _runtime(request)
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


def create_app(settings: Settings | None = None) -> Starlette:
    """A Starlette app; the service sets ``app.state.runtime`` before serving.

    Args:
        settings: Read for the CORS origins (``TONLE_CORS_ORIGINS``); default from the
            environment.
    """
    settings = settings or Settings()
    routes: list[BaseRoute] = [
        # Imaging first: its /cds-services/cxr-triage must win over /cds-services/{id}.
        *imaging_routes.routes(),
        *cds_hooks.routes(),
        *rest.routes(),
        Route("/v1/models", list_models, methods=["GET"]),
        *ui_routes.routes(),
    ]
    middleware = []
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
