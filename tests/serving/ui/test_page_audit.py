"""The NCD explanation page goes through the one request pipeline: a signed link is its
credential (403 / 410 before any lookup, no durable row), and each opening that shows
something commits an audit row (``read``, under the tenant the card was made for)
before the page leaves; 503 when that row cannot be committed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from serving.audit import AuditStore
from serving.runtime import Runtime
from serving.ui import links
from tests.serving.ui.ui_fixtures import demo_app, request

CVD = "/cds-services/ncd-cvd-risk"


@pytest.fixture(scope="module")
def app_rt(
    ui_store_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Starlette, Runtime]]:
    with demo_app(ui_store_home, tmp_path_factory.mktemp("page-audit")) as pair:
        yield pair


def _token(app: Starlette, path: str) -> dict[str, str]:
    r = request(app, "POST", "/ui/api/demo/token", json={"aud": f"http://testserver{path}"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _card(app: Starlette, patient: str = "demo-01") -> tuple[dict[str, Any], httpx.Response]:
    """The demo EHR's patient-view call: the CVD card and the hook's response."""
    discovery = request(app, "GET", "/cds-services", headers=_token(app, "/cds-services"))
    service = next(s for s in discovery.json()["services"] if s["id"] == "ncd-cvd-risk")
    pf = request(
        app,
        "POST",
        "/ui/api/demo/prefetch",
        json={"patientId": patient, "templates": service["prefetch"]},
    ).json()["prefetch"]
    body = {
        "hook": "patient-view",
        "hookInstance": "0c1d5e33-6a1c-4f7e-9d43-5f1a2b3c4d5e",
        "context": {"userId": "Practitioner/demo", "patientId": patient},
        "prefetch": pf,
    }
    response = request(app, "POST", CVD, json=body, headers=_token(app, CVD))
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    return card, response


def _audit(runtime: Runtime) -> AuditStore:
    assert isinstance(runtime.audit, AuditStore)
    return runtime.audit


def test_opening_the_page_is_audited_under_the_cards_tenant(
    app_rt: tuple[Starlette, Runtime],
) -> None:
    app, runtime = app_rt
    card, hook = _card(app)
    (shown,) = _audit(runtime).rows(request_id=hook.headers["x-request-id"])
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver"))
    assert page.status_code == 200
    (row,) = _audit(runtime).rows(request_id=page.headers["x-request-id"])
    assert (row.service_id, row.outcome) == ("ui-explain-ncd", "read")
    # The browser has no credentials: the link's holder, under the card's tenant and patient.
    assert (row.caller_iss, row.caller_sub) == ("tonle-link", None)
    assert row.caller_tenant == shown.caller_tenant == "demo"
    assert row.patient_ref == shown.patient_ref == "Patient/demo-01"
    assert (row.model_name, row.model_sha256) == (shown.model_name, shown.model_sha256)
    assert row.card_ids == []  # the card belongs to the hook's row only


def test_refused_links_are_pages_without_a_durable_row(
    app_rt: tuple[Starlette, Runtime],
) -> None:
    app, runtime = app_rt
    card, _ = _card(app)
    path = card["links"][0]["url"].removeprefix("http://testserver").split("&lang=")[0]
    bare = path.split("?")[0]
    signer = links.signer(runtime)
    expired = signer.sign(bare, now=time.time() - timedelta(days=400).total_seconds())
    before = _audit(runtime).count()
    refused = {
        "unsigned": request(app, "GET", bare),
        "tampered": request(app, "GET", path[:-1] + ("0" if path[-1] != "0" else "1")),
        "expired": request(app, "GET", expired),
    }
    assert {k: r.status_code for k, r in refused.items()} == {
        "unsigned": 403,
        "tampered": 403,
        "expired": 410,
    }
    assert all(r.headers["content-type"].startswith("text/html") for r in refused.values())
    assert len({r.text for r in refused.values()}) == 1  # one page, the query not echoed
    assert not any("x-request-id" in r.headers for r in refused.values())
    assert _audit(runtime).count() == before


def test_a_link_to_nothing_is_404_audited_as_refused(app_rt: tuple[Starlette, Runtime]) -> None:
    app, runtime = app_rt
    missing = request(app, "GET", links.signer(runtime).sign("/ui/explain/" + "0" * 32))
    assert missing.status_code == 404
    (row,) = _audit(runtime).rows(request_id=missing.headers["x-request-id"])
    assert (row.service_id, row.outcome, row.reason) == ("ui-explain-ncd", "refused", "not-found")
    assert (row.caller_iss, row.caller_tenant, row.patient_ref) == ("tonle-link", None, None)


def test_the_page_is_withheld_without_its_row(
    app_rt: tuple[Starlette, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, runtime = app_rt
    card, _ = _card(app)

    async def down(row: object) -> None:
        raise RuntimeError("audit database unavailable")

    monkeypatch.setattr(_audit(runtime), "record_async", down)
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver"))
    assert (page.status_code, page.json()) == (503, {"error": "audit-unavailable"})
