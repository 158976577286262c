"""The floor: a minimal BentoML service answering a constant, configured like Tonle
(the same traffic limits, no access log, BentoML's metrics off, no URL traced).

Two paths are measured (docs/performance.md: they differ): ``POST /const`` is a
``@bentoml.api`` method, ``POST /asgi/const`` a route on a mounted Starlette app
(the path Tonle's CDS Hooks, REST and imaging routes take). ``/asgi/const`` reads the
whole body as Tonle's upload route does; ``bench_cxr_http.py --cpu-target`` sends it the
same radiographs, the floor of BentoML itself.
"""

from __future__ import annotations

import gc
import logging

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_BODY = b'{"cards":[]}'


async def _const(request: Request) -> Response:
    await request.body()  # joined from its chunks, as Tonle's read_body does
    return Response(_BODY, media_type="application/json")


app = Starlette(routes=[Route("/asgi/const", _const, methods=["POST"])])


@bentoml.service(
    name="const",
    traffic={"timeout": 30, "max_concurrency": 64},
    logging={"access": {"enabled": False}},
    metrics={"enabled": False},
    tracing={"excluded_urls": ["/"]},
)
@bentoml.asgi_app(app, path="/")
class Const:
    """Returns a constant."""

    def __init__(self) -> None:
        logging.getLogger("uvicorn.access").disabled = True
        gc.freeze()

    @bentoml.api(route="/const")
    def const(self, hook: str = "") -> dict[str, list[str]]:
        """A constant answer."""
        return {"cards": []}
