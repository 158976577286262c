"""What Tonle takes from BentoML beyond its public API still exists and still works.

A BentoML upgrade that moves or changes any of it fails here, by name, instead of
silently serving without the timer fix, with BentoML's front page, or with its
raw-path metrics.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from bentoml._internal.server.http import traffic as bentoml_traffic

from serving import bento_internals
from serving.bento_internals import TimeoutMiddleware, install_timeout_middleware

# Importing BentoML's service SDK warns about its own use of a deprecated pydantic hook.
_SDK_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@_SDK_WARNINGS
def test_bentoml_still_builds_its_timeout_middleware_from_the_patched_attribute() -> None:
    import _bentoml_impl.server.app as bento_app

    source = inspect.getsource(bento_app)
    # The app builder looks the class up on the traffic module when the worker starts.
    assert "TimeoutMiddleware" in source, "BentoML no longer uses traffic.TimeoutMiddleware"
    original = bentoml_traffic.TimeoutMiddleware
    try:
        install_timeout_middleware()
        assert bentoml_traffic.TimeoutMiddleware is TimeoutMiddleware
    finally:
        bentoml_traffic.TimeoutMiddleware = original  # type: ignore[misc]
    params = list(inspect.signature(original.__init__).parameters)
    assert params[:3] == ["self", "app", "timeout"], params
    assert hasattr(original, "_set_timer_out"), "BentoML renamed its timeout callback"


def _run(middleware: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    asyncio.run(middleware(scope, receive, send))
    return sent


def test_the_timer_is_cancelled_once_the_answer_starts() -> None:
    async def fast(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)

    assert _run(TimeoutMiddleware(fast, timeout=1))[0]["status"] == 200
    timed_out = _run(TimeoutMiddleware(slow, timeout=0.05))
    assert timed_out[0]["status"] == 504


def test_swagger_ui_files_are_where_docs_serve_them_from() -> None:
    folder = bento_internals.swagger_ui_assets()
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert (folder / name).is_file(), name
    assert "googletagmanager" not in (folder / "swagger-ui-bundle.js").read_text(errors="ignore")


@_SDK_WARNINGS
def test_service_config_switches_bentoml_metrics_off() -> None:
    from _bentoml_sdk.service.config import ServiceConfig

    assert "metrics" in ServiceConfig.__annotations__
    from _bentoml_impl.server.mount import PassiveMount

    # Tonle's "/" and "/docs.json" win because BentoML mounts the app passively before
    # adding its own index route.
    assert "matches" in PassiveMount.__dict__
