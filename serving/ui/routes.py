"""The ``/ui`` routes (contract C5): the web pages Tonle serves itself.

Pages (language from ``?lang=``, else ``Accept-Language``, else the site default):

* ``GET /ui/explain/{card uuid}``, ``GET /ui/explain/cxr/{result id}`` (with its
  images) and ``GET /ui/models/{name}/{version}``: :mod:`serving.ui.pages`.
* ``GET /ui/ehr`` and its ``POST /ui/api/demo/*`` JSON (demo only):
  :mod:`serving.ui.demo_ehr`.
* ``POST /ui/api/feedback`` from an explanation page: :mod:`serving.ui.feedback`.
* ``GET /ui/launch?iss=...&launch=...`` - minimal SMART app launch (see :func:`launch`).

Shared rendering, language and headers are in :mod:`serving.ui.render`. Everything
(CSS, JS, the Khmer font) is served from ``/ui/static``: no CDN, works offline. HTML
is rendered by Jinja2 with autoescaping; card markdown is rendered by the browser's
own small escaping renderer (``static/markdown.js``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from serving.ui.demo_ehr import demo_prefetch, demo_token, demo_xray, ehr
from serving.ui.feedback import feedback
from serving.ui.pages import cxr_png, explain_cxr, explain_ncd, model_card
from serving.ui.render import CARD_ID, language, message_page, runtime_of

__all__ = ["routes"]

_STATIC = Path(__file__).parent / "static"


async def launch(request: Request) -> Response:
    """``GET /ui/launch?iss=&launch=``: minimal SMART app launch.

    The EHR opens this with its FHIR base (``iss``) and an opaque ``launch`` context.
    Tonle checks that ``iss`` is a FHIR server it trusts for some caller, then opens
    the explanation named by ``card`` with the ``exp`` and ``sig`` of the card's signed
    link (passed through by the EHR's launch URL; the page checks them) or the demo EHR.
    A full OAuth 2 authorisation-code exchange is not done: Tonle reads no
    FHIR data from the launch, it only shows what it already computed.
    """
    runtime = runtime_of(request)
    iss = request.query_params.get("iss")
    token = request.query_params.get("launch")
    if not iss or not token:
        return message_page(request, "ui.launch.missing", 400)
    allowed = runtime.extras.get("smart_fhir_servers")
    if allowed is not None and iss not in allowed:
        return message_page(request, "ui.launch.untrusted", 403)
    lang = language(request)
    card = request.query_params.get("card")
    if card and CARD_ID.match(card):
        signed = {k: v for k in ("exp", "sig") if (v := request.query_params.get(k))}
        query = urlencode({**signed, "lang": lang})
        return RedirectResponse(f"/ui/explain/{card}?{query}", status_code=303)
    return RedirectResponse(f"/ui/ehr?lang={lang}", status_code=303)


async def index(request: Request) -> Response:
    """``/ui`` opens the demo EHR."""
    return RedirectResponse("/ui/ehr", status_code=307)


def routes() -> list[BaseRoute]:
    """The ``/ui`` routes and static files."""
    return [
        Route("/ui", index, methods=["GET"]),
        Route("/ui/", index, methods=["GET"]),
        Route("/ui/ehr", ehr, methods=["GET"]),
        Route("/ui/launch", launch, methods=["GET"]),
        Route("/ui/explain/cxr/{result_id}", explain_cxr, methods=["GET"]),
        Route("/ui/explain/cxr/{result_id}/heatmap.png", cxr_png, methods=["GET"]),
        Route("/ui/explain/cxr/{result_id}/image.png", cxr_png, methods=["GET"]),
        Route("/ui/explain/{card_id}", explain_ncd, methods=["GET"]),
        Route("/ui/models/{name}/{version}", model_card, methods=["GET"]),
        Route("/ui/api/feedback", feedback, methods=["POST"]),
        Route("/ui/api/demo/prefetch", demo_prefetch, methods=["POST"]),
        Route("/ui/api/demo/token", demo_token, methods=["POST"]),
        Route("/ui/api/demo/xray", demo_xray, methods=["POST"]),
        Mount("/ui/static", app=StaticFiles(directory=_STATIC), name="ui-static"),
    ]
