"""The ``/ui`` routes (contract C5): the web pages Tonle serves itself.

Pages (language from ``?lang=``, else ``Accept-Language``, else the site default):

* ``GET /ui/explain/{card uuid}``, ``GET /ui/explain/cxr/{result id}`` (with its
  images) and ``GET /ui/models/{name}/{version}``: :mod:`serving.ui.pages`.
* ``GET /ui/ehr`` and its ``POST /ui/api/demo/*`` JSON (demo only):
  :mod:`serving.ui.demo_ehr`.
* ``POST /ui/api/feedback`` from an explanation page: :mod:`serving.ui.feedback`.
* ``GET /ui/launch?iss=...&launch=...`` - minimal SMART app launch (see :func:`launch`).
* ``GET /ui/monitor`` - monitoring for operators (metrics token) or one tenant (API
  key): :mod:`serving.monitor.page`.
* ``GET /`` - the front page (:func:`front_page`); ``GET /docs`` - interactive API docs,
  only with ``TONLE_API_DOCS`` (:func:`front_routes`).

Shared rendering, language and headers are in :mod:`serving.ui.render`. Everything
(CSS, JS, the Khmer font) is served from ``/ui/static``: no CDN, works offline. HTML
is rendered by Jinja2 with autoescaping; card markdown is rendered by the browser's
own small escaping renderer (``static/markdown.js``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from serving import i18n
from serving.monitor.page import monitor_page
from serving.runtime import Runtime
from serving.settings import Settings
from serving.ui.demo_ehr import demo_prefetch, demo_token, demo_xray, ehr
from serving.ui.feedback import feedback
from serving.ui.pages import (
    cxr_pixels,
    cxr_png,
    explain_cxr,
    explain_ncd,
    model_card,
    model_card_figure,
)
from serving.ui.render import CARD_ID, demo_enabled, language, message_page, runtime_of

if TYPE_CHECKING:
    from jinja2 import Template

__all__ = ["front_routes", "routes"]

_STATIC = Path(__file__).parent / "static"


async def launch(request: Request) -> Response:
    """``GET /ui/launch?iss=&launch=``: minimal SMART app launch.

    The EHR opens this with its FHIR base (``iss``) and an opaque ``launch`` context.
    Tonle checks that ``iss`` is a FHIR server on some trusted issuer's ``fhir_servers``
    list (any FHIR server in dev mode, which serves loopback clients only), then opens
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
    if not _trusted_fhir_server(runtime, iss):
        return message_page(request, "ui.launch.untrusted", 403)
    lang = language(request)
    card = request.query_params.get("card")
    if card and CARD_ID.match(card):
        signed = {k: v for k in ("exp", "sig") if (v := request.query_params.get(k))}
        query = urlencode({**signed, "lang": lang})
        return RedirectResponse(f"/ui/explain/{card}?{query}", status_code=303)
    return RedirectResponse(f"/ui/ehr?lang={lang}", status_code=303)


def _trusted_fhir_server(runtime: Runtime, iss: str) -> bool:
    if runtime.settings.dev:
        return True
    auth = runtime.cds_auth
    issuers = getattr(auth, "issuers", None)
    if issuers is None:
        return False
    allowed = {server for config in issuers.issuers.values() for server in config.fhir_servers}
    return iss.rstrip("/") in allowed


async def front_page(request: Request) -> Response:
    """``GET /``: what this service is, whether it is ready, and where its API is
    described, in the request's language (``?lang=``, else ``Accept-Language``). No
    third-party script, no framework version."""
    runtime = runtime_of(request)
    models = [stored.metadata for stored in runtime.models.values()]
    lang = language(request)

    def tr(key: str, **params: object) -> str:
        return i18n.t(key, lang, **params)

    html = _home_template().render(
        t=tr,
        lang=lang,
        meta=i18n.language_meta(lang),
        languages=[(code, i18n.language_meta(code).name) for code in i18n.available_languages()],
        ready=runtime.ready,
        models=models,
        services=list(runtime.cds_services),
        demo=demo_enabled(runtime),
        docs=runtime.settings.api_docs,
    )
    return HTMLResponse(html, headers=_HOME_HEADERS)


async def api_docs(request: Request) -> Response:
    """``GET /docs`` (only with ``TONLE_API_DOCS``): Swagger UI over ``/v1/openapi.json``,
    from files this service serves itself."""
    return HTMLResponse(_DOCS_PAGE, headers=_DOCS_HEADERS)


def front_routes(settings: Settings) -> list[BaseRoute]:
    """``/`` and, when the configuration enables them, the interactive API docs."""
    found: list[BaseRoute] = [Route("/", front_page, methods=["GET"])]
    if settings.api_docs:
        from serving.bento_internals import swagger_ui_assets

        found += [
            Route("/docs", api_docs, methods=["GET"]),
            Mount("/docs/assets", app=StaticFiles(directory=swagger_ui_assets()), name="docs"),
        ]
    return found


_HOME_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# Swagger UI sets inline styles and data: images; scripts stay this service's own.
_DOCS_HEADERS = {
    **_HOME_HEADERS,
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'"
    ),
}
_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tonle REST API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/ui/static/docs.js"></script></body></html>
"""


def _home_template() -> Template:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True),
    )
    return env.get_template("home.html")


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
        Route("/ui/explain/cxr/{result_id}/pixels", cxr_pixels, methods=["GET"]),
        Route("/ui/explain/{card_id}", explain_ncd, methods=["GET"]),
        Route("/ui/models/{name}/{version}", model_card, methods=["GET"]),
        Route("/ui/models/{name}/{version}/figures/{file}", model_card_figure, methods=["GET"]),
        Route("/ui/monitor", monitor_page, methods=["GET"]),
        Route("/ui/api/feedback", feedback, methods=["POST"]),
        Route("/ui/api/demo/prefetch", demo_prefetch, methods=["POST"]),
        Route("/ui/api/demo/token", demo_token, methods=["POST"]),
        Route("/ui/api/demo/xray", demo_xray, methods=["POST"]),
        Mount("/ui/static", app=StaticFiles(directory=_STATIC), name="ui-static"),
    ]
