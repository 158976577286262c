"""The route table: every route the service mounts is made by the one request pipeline
(:func:`serving.http.pipeline.endpoint`) or is listed below, with why it needs no
caller. There are no other exceptions: the operators' routes (``/metrics``,
``/readyz/detail``, ``/ui/monitor``) are pipeline endpoints too.

A new route that skips the pipeline (authenticates, parses or audits on its own) fails
:func:`test_every_route_is_a_pipeline_endpoint_or_listed` until it is built with
``endpoint()`` or added here with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from serving.app import create_app
from serving.http.pipeline import pipeline_scheme
from serving.settings import Settings

# Routes that need no caller: they show nothing stored about a patient or a tenant and
# change nothing, so there is no one to authenticate and nothing to audit.
NO_CALLER = {
    "/": "front page: static HTML",
    "/docs": "interactive API docs page (only with TONLE_API_DOCS): static HTML",
    "/docs/assets": "Swagger UI's own static files",
    "/docs.json": "404 in place of BentoML's API description",
    "/v1/openapi.json": "the REST API's description",
    "/v1/models": "the verified models' names, versions and sha256 (no data)",
    "/ui": "redirect to the demo EHR",
    "/ui/": "redirect to the demo EHR",
    "/ui/launch": "SMART launch: a redirect to a signed page link; reads no data",
    "/ui/models/{name}/{version}": "a model card (documentation)",
    "/ui/models/{name}/{version}/figures/{file}": "a model card's figures",
    "/ui/static": "CSS, JS and fonts",
    # The demo EHR: served only in the demo (404 otherwise), where the app admits
    # loopback clients only (serving.app.LoopbackOnly); its calls to Tonle go through
    # the pipeline like an EHR's.
    "/ui/ehr": "demo EHR page",
    "/ui/api/demo/prefetch": "demo EHR: synthetic patients' prefetch",
    "/ui/api/demo/token": "demo EHR: the demo issuer's tokens",
    "/ui/api/demo/xray": "demo EHR: synthetic chest X-rays",
}


def bypassing(routes: Sequence[BaseRoute], prefix: str = "") -> list[str]:
    """The routes (``METHODS path``) neither made by ``endpoint()`` nor listed above."""
    found: list[str] = []
    for route in routes:
        if isinstance(route, Mount) and route.routes:
            found += bypassing(route.routes, prefix + route.path)
            continue
        path = prefix + str(getattr(route, "path", ""))
        if path in NO_CALLER:
            continue
        if isinstance(route, Route) and pipeline_scheme(route.endpoint) is not None:
            continue
        methods = sorted(getattr(route, "methods", None) or {"*"})
        found.append(f"{','.join(methods)} {path}")
    return found


def _paths(routes: Sequence[BaseRoute], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for route in routes:
        path = prefix + str(getattr(route, "path", ""))
        out.add(path)
        if isinstance(route, Mount) and route.routes:
            out |= _paths(route.routes, path)
    return out


def _service_app(*, docs: bool) -> list[BaseRoute]:
    """The routes of the app the service mounts (serving.service: ``create_app()``),
    with every optional route switched on when ``docs``."""
    return list(create_app(Settings(api_docs=docs)).routes)


def test_every_route_is_a_pipeline_endpoint_or_listed() -> None:
    for docs in (False, True):
        assert bypassing(_service_app(docs=docs)) == []


def test_the_list_names_only_mounted_routes() -> None:
    """A route removed from the app leaves the list too, so it stays the truth."""
    mounted = _paths(_service_app(docs=True))
    assert set(NO_CALLER) - mounted == set()


def test_the_routes_that_answer_callers_are_pipeline_endpoints() -> None:
    """Spot check of the schemes: CDS Hooks by JWT, REST by API key, pages by link,
    the operators' routes by the metrics token (the monitoring page: or an API key)."""
    schemes = {
        (path, ",".join(sorted(route.methods or ()))): pipeline_scheme(route.endpoint)
        for route in _service_app(docs=False)
        if isinstance(route, Route) and (path := route.path)
    }
    assert schemes[("/cds-services/{service_id}/feedback", "POST")] == "jwt"
    assert schemes[("/cds-services/{service_id}", "POST")] == "jwt"
    assert schemes[("/v1/risk/cvd", "POST")] == "api-key"
    assert schemes[("/ui/explain/{card_id}", "GET,HEAD")] == "link"
    assert schemes[("/ui/api/feedback", "POST")] == "page-link"
    assert schemes[("/metrics", "GET,HEAD")] == "metrics-token"
    assert schemes[("/readyz/detail", "GET,HEAD")] == "metrics-token"
    assert schemes[("/ui/monitor", "GET,HEAD")] == "metrics-token-or-api-key"


def test_a_route_that_skips_the_pipeline_is_found() -> None:
    async def on_its_own(request: Request) -> Response:
        return Response(b"{}")

    routes = _service_app(docs=False)
    extra = [Route("/v1/new", on_its_own, methods=["POST"])]
    assert bypassing([*routes, *extra]) == ["POST /v1/new"]
    nested = Mount("/v2", routes=[Route("/thing", on_its_own, methods=["GET"])])
    assert bypassing([*routes, nested]) == ["GET,HEAD /v2/thing"]
