"""The ASGI app mounted on the BentoML service: CDS Hooks and plain REST routes."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.runtime import Runtime

__all__ = ["create_app"]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def discovery(request: Request) -> JSONResponse:
    """CDS Hooks discovery: the services this deployment offers."""
    _runtime(request)
    return JSONResponse({"services": []})


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


def create_app() -> Starlette:
    """A Starlette app; the service sets ``app.state.runtime`` before serving."""
    return Starlette(
        routes=[
            Route("/cds-services", discovery, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
        ]
    )
