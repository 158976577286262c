"""``/`` is Tonle's own page; interactive API docs only where configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from serving.app import create_app
from serving.runtime import Runtime
from tests.serving.cds_fixtures import runtime_for, shared_store
from tests.serving.test_cds_hooks import call


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with runtime_for(shared_store(), tmp_path_factory.mktemp("front")) as rt:
        yield rt


def _app(runtime: Runtime, **settings: object) -> Starlette:
    runtime.settings = runtime.settings.model_copy(update=settings)
    app = create_app(runtime.settings)
    app.state.runtime = runtime
    return app


def test_front_page_says_what_tonle_is(runtime: Runtime) -> None:
    page = call(_app(runtime, api_docs=False, demo_issuer_dir=None), "GET", "/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    text = page.text
    for expected in ("Tonle", "Ready", "/v1/openapi.json", "cvd-risk 1.0.0", "ncd-cvd-risk"):
        assert expected in text, expected
    for absent in ("<script", '/docs"', "/ui/ehr", "bentoml", "googletagmanager"):
        assert absent not in text, absent


def test_demo_front_page_links_the_demo_ehr(runtime: Runtime, tmp_path: Path) -> None:
    page = call(_app(runtime, demo_issuer_dir=tmp_path), "GET", "/")
    assert '<a href="/ui/ehr">' in page.text


def test_api_docs_only_when_enabled(runtime: Runtime) -> None:
    assert call(_app(runtime, api_docs=False), "GET", "/docs").status_code == 404
    app = _app(runtime, api_docs=True)
    docs = call(app, "GET", "/docs")
    assert docs.status_code == 200
    assert '<script src="/docs/assets/swagger-ui-bundle.js">' in docs.text
    assert "http" not in docs.text.replace("http-equiv", "")  # nothing from elsewhere
    assert call(app, "GET", "/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert '<a href="/docs">' in call(app, "GET", "/").text
