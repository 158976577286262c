"""A Tonle app with real fixture models, real JWT auth and the demo issuer, for UI tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml
from starlette.applications import Starlette

from serving.app import create_app
from serving.audit import AuditStore
from serving.demo_issuer import ensure_demo_issuer
from serving.runtime import Runtime
from tests.serving.cds_fixtures import model_store_at, runtime_for

__all__ = ["axe_violations", "build_cvd_store", "cvd_app", "demo_app", "request"]


def build_cvd_store(tmp: Path) -> Path:
    """Store the fixture CVD model and a tiny untrained CXR model; return the store home."""
    from tests.cxr_fixtures import make_cxr_artifact
    from tests.ncd_fixtures import make_ncd_artifact

    with model_store_at(tmp / "bentoml") as home:
        make_ncd_artifact(tmp, "cvd")
        make_cxr_artifact(tmp)  # cxr-triage 0.0.1, 64 px
    return home


@contextmanager
def cvd_app(store_home: Path, tmp: Path, **settings: Any) -> Iterator[Starlette]:
    """One app instance (as one worker or replica runs it) serving the fixture CVD model.

    ``settings`` go to :func:`runtime_for` (e.g. ``database_url`` for a database that
    several instances share); the audit store is closed on exit.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "cvd-serving.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {"cvd-risk": "1.0.0"},
                "ncd_services": {"ncd-cvd-risk": {"model": "cvd-risk", "title": "CVD risk"}},
            }
        ),
        encoding="utf-8",
    )
    with runtime_for(store_home, tmp, serving_config=config, **settings) as runtime:
        app = create_app(runtime.settings)
        app.state.runtime = runtime
        try:
            yield app
        finally:
            assert isinstance(runtime.audit, AuditStore)
            runtime.audit.close()


@contextmanager
def demo_app(
    store_home: Path,
    tmp: Path,
    public_url: str = "http://testserver",
    demo: bool = True,
    cxr: bool = False,
) -> Iterator[tuple[Starlette, Runtime]]:
    """The app as ``tonle demo`` runs it: JWT auth trusting the demo issuer (not dev mode).

    With ``cxr``, chest X-ray serving runs too (the tiny CXR model) and ``tmp`` holds
    two synthetic radiographs where ``tonle demo`` keeps them (``cxr-synthetic/``).
    """
    issuer_dir = tmp / "demo-issuer"
    issuers = ensure_demo_issuer(issuer_dir)
    serving: dict[str, Any] = {
        "models": {"cvd-risk": "1.0.0"},
        "ncd_services": {"ncd-cvd-risk": {"model": "cvd-risk", "title": "10-year CVD risk"}},
        "no_advice_card": True,  # as training.demo writes it
    }
    if cxr:
        from training.cxr_synthetic import generate

        generate(tmp / "cxr-synthetic", 2, seed=3, size=256)
        serving["models"]["cxr-triage"] = "0.0.1"
        serving["imaging"] = {"adaptive_batching": False}
    config = tmp / "ui-serving.yaml"
    config.write_text(yaml.safe_dump(serving), encoding="utf-8")
    with runtime_for(
        store_home,
        tmp,
        serving_config=config,
        dev=False,
        public_url=public_url,
        allowed_issuers=issuers,
        demo_issuer_dir=issuer_dir if demo else None,
        # Only the demo may keep a generated link key in the database.
        link_secret=None if demo else "ui-fixture-link-key-".ljust(40, "k"),
    ) as runtime:
        app = create_app(runtime.settings)
        app.state.runtime = runtime
        yield app, runtime


def request(app: Starlette, method: str, url: str, json: Any = None, **kw: Any) -> httpx.Response:
    """One request through the ASGI app."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.request(method, url, json=json, **kw)

    return asyncio.run(go())


def axe_violations(page: Any) -> list[str]:
    """axe-core's violations of moderate impact or above, as 'rule: target' lines.

    The page's context must bypass its CSP (``bypass_csp=True``) to inject axe.
    """
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        axe = resources.files("axe_playwright_python") / "axe.min.js"
        page.add_script_tag(content=axe.read_text(encoding="utf-8"))
    result = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations"
        ".filter(v => ['moderate', 'serious', 'critical'].includes(v.impact))"
        ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')))"
    )
    return list(result)
