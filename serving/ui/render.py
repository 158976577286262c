"""What every ``/ui`` page and JSON endpoint shares: language, templates, headers, links.

Pages are rendered by Jinja2 with autoescaping and sent with a strict
Content-Security-Policy (everything from ``/ui/static``: no CDN, works offline).
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from serving import i18n
from serving.runtime import Runtime
from serving.ui import links

__all__ = [
    "CARD_ID",
    "DISPLAY_UNIT",
    "UI_CALLER",
    "demo_enabled",
    "json_error",
    "language",
    "message_page",
    "refused_page",
    "render_page",
    "runtime_of",
    "script_json",
    "signed_link",
]

UI_CALLER = "tonle-ui"
CARD_ID = re.compile(r"^[0-9A-Za-z-]{8,64}$")
DISPLAY_UNIT = {"mm[Hg]": "mmHg", "kg/m2": "kg/m²", "a": "", "1": ""}
_HTML_HEADERS = {
    # Pages only load what Tonle itself serves: no CDN, no inline scripts.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def runtime_of(request: Request) -> Runtime:
    """The service runtime the app was built with."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def _site_language(runtime: Runtime) -> str:
    language = getattr(runtime, "language", None)
    return str(language) if language else runtime.settings.language


def language(request: Request) -> str:
    """The page language: ``?lang=`` if available, else ``Accept-Language``, else the site's."""
    asked = request.query_params.get("lang")
    if asked in i18n.available_languages():
        return asked
    return i18n.negotiate(
        request.headers.get("accept-language"), _site_language(runtime_of(request))
    )


def demo_enabled(runtime: Runtime) -> bool:
    """Whether the demo EHR and its token endpoint exist (``TONLE_DEMO_ISSUER_DIR`` set)."""
    return runtime.settings.demo_issuer_dir is not None


@cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("serving.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


# Stored NCD metric keys: "test_X" (model, test split), "compared_test_X" (model on
# the rows the WHO chart covers), "who_test_X" (the WHO chart on those rows).
_METRIC_SETS = (("who_test_", "ui.metric.who"), ("compared_test_", "ui.metric.compared"))


def _metric_name(key: str, lang: str) -> str:
    """A stored metric key in words ("test_auroc" -> "AUROC at horizon (IPCW)"); keys
    without a catalogue name are shown as stored."""
    wrap = next((w for p, w in _METRIC_SETS if key.startswith(p)), None)
    base = key.split("test_", 1)[1] if "test_" in key else key
    try:
        name = i18n.t(f"ui.metric.{base}", lang)
    except KeyError:
        return key
    return i18n.t(wrap, lang, name=name) if wrap else name


def render_page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A template rendered in the request's language, with the pages' security headers."""
    lang = context.pop("lang", None) or language(request)
    query = context.pop("query", None)
    if query is None:
        query = {k: v for k, v in request.query_params.items() if k != "lang"}
    meta = i18n.language_meta(lang)

    def tr(key: str, **params: object) -> str:
        return i18n.t(key, lang, **params)

    def num(value: float, decimals: int = 0) -> str:
        return i18n.format_number(value, lang, decimals)

    def nums(text: str) -> str:
        return i18n.format_numbers_in(text, lang)

    def region(code: str | None, name: str) -> str:
        """A WHO region's name in the page's language (as recorded where not translated)."""
        key = f"region.{code}"
        return i18n.t(key, lang) if code and i18n.has_message(key, lang) else name

    def when(value: date | datetime | None) -> str:
        return i18n.format_date(value, lang) if value is not None else ""

    def metric_name(key: str) -> str:
        return _metric_name(key, lang)

    languages = [(code, i18n.language_meta(code).name) for code in i18n.available_languages()]
    html = (
        _env()
        .get_template(template)
        .render(
            t=tr,
            num=num,
            nums=nums,
            region=region,
            when=when,
            metric_name=metric_name,
            lang=lang,
            meta=meta,
            languages=languages,
            path=request.url.path,
            query=query,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers=_HTML_HEADERS)


def message_page(request: Request, key: str, status: int) -> HTMLResponse:
    """A page showing one translated message (not found, disabled, ...)."""
    return render_page(request, "message.html", status=status, message_key=key)


def refused_page(request: Request, refused: Response) -> Response:
    """A page link's refusal as a page: 403 (tampered) / 410 (expired) with one body
    (:func:`serving.http.identify.refusal` decides which); other refusals as they are."""
    if refused.status_code not in (403, 410):
        return refused
    # One body for every refusal: the request's own query is not echoed.
    return render_page(
        request, "message.html", status=refused.status_code, message_key="ui.link.refused", query={}
    )


def signed_link(runtime: Runtime, path: str) -> str:
    """``path`` with its ``?exp=&sig=`` link signature."""
    return links.signer(runtime).sign(path)


def script_json(value: object) -> Markup:
    """JSON safe to place inside ``<script type="application/json">``."""
    text = json.dumps(value, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 - every markup character is escaped above


def json_error(reason: str, status: int = 400) -> JSONResponse:
    """A JSON error body ``{"error": reason}`` for the pages' JSON endpoints."""
    return JSONResponse({"error": reason}, status_code=status)
