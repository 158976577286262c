"""The operators' routes in the one pipeline: ``/metrics``, ``/readyz/detail`` and
``/ui/monitor`` answer the metrics token (the monitoring page an API key too, showing
that key's tenant only), each answer with one audit row, and 503 when that row cannot
be committed. Their rows are not clinical calls: monitoring leaves them out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from serving.app import create_app
from serving.audit import AuditStore
from serving.audit.records import OPERATOR_SERVICES
from serving.auth import unauthorized_response
from serving.metrics import current_samples
from serving.runtime import Runtime
from tests.serving.cds_fixtures import runtime_for, shared_store
from tests.serving.ui.ui_fixtures import request

TOKEN = "operator-metrics-token-".ljust(40, "m")
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = {"/metrics": "metrics", "/readyz/detail": "readiness-detail", "/ui/monitor": "ui-monitor"}
RISK = {"sex": "female", "age": 55, "smoking": False, "sbp": 140, "total_chol": 5.0,
        "diabetes": False, "bmi": 24.0}  # fmt: skip


@pytest.fixture(scope="module")
def app_rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Starlette, Runtime]]:
    tmp = tmp_path_factory.mktemp("operator")
    link_key = "operator-routes-link-key-".ljust(40, "k")
    with runtime_for(
        shared_store(), tmp, dev=False, link_secret=link_key, metrics_token=TOKEN
    ) as runtime:
        app = create_app(runtime.settings)
        app.state.runtime = runtime
        yield app, runtime
        assert isinstance(runtime.audit, AuditStore)
        runtime.audit.close()


def _store(runtime: Runtime) -> AuditStore:
    assert isinstance(runtime.audit, AuditStore)
    return runtime.audit


def _row(store: AuditStore, response: httpx.Response) -> tuple[Any, ...]:
    (row,) = store.rows(request_id=response.headers["x-request-id"])
    return row.service_id, row.outcome, row.caller_iss, row.caller_sub, row.caller_tenant


def test_the_operator_service_ids_are_the_routes() -> None:
    assert set(ROUTES.values()) == OPERATOR_SERVICES


@pytest.mark.parametrize("path", ROUTES)
def test_the_metrics_token_is_needed_and_each_answer_is_audited(
    app_rt: tuple[Starlette, Runtime], path: str
) -> None:
    app, runtime = app_rt
    store = _store(runtime)
    before = store.count()
    for refused in ({}, {"Authorization": f"Bearer {'x' * 40}"}, {"Authorization": TOKEN}):
        response = request(app, "GET", path, headers=refused)
        assert response.status_code == 401
        assert response.content == unauthorized_response().body  # the one 401 body
    assert store.count() == before  # refused callers: counted, never a row
    for _ in range(2):
        ok = request(app, "GET", path, headers=OPERATOR)
        assert ok.status_code == 200, ok.text
        assert _row(store, ok) == (ROUTES[path], "read", "tonle-metrics-token", None, None)
    assert store.count() == before + 2


@pytest.mark.parametrize("path", ROUTES)
def test_an_operator_route_answers_503_without_its_audit_row(
    app_rt: tuple[Starlette, Runtime], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, runtime = app_rt
    store = _store(runtime)
    before = store.count()

    async def down(row: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "record_async", down)
    failed = request(app, "GET", path, headers=OPERATOR)
    assert failed.status_code == 503
    assert failed.json() == {"error": "audit-unavailable"}
    monkeypatch.undo()
    assert store.count() == before


def test_an_api_key_sees_its_own_tenant_on_the_monitoring_page(
    app_rt: tuple[Starlette, Runtime],
) -> None:
    app, runtime = app_rt
    store = _store(runtime)
    keys = {tenant: store.create_api_key(tenant, "monitor") for tenant in ("site-a", "site-b")}
    for _, secret in keys.values():
        answered = request(app, "POST", "/v1/risk/cvd", json=RISK, headers={"X-API-Key": secret})
        assert answered.status_code == 200, answered.text
    info, secret = keys["site-a"]
    for header in ({"X-API-Key": secret}, {"Authorization": f"ApiKey {secret}"}):
        mine = request(app, "GET", "/ui/monitor", headers=header)
        assert mine.status_code == 200, mine.text
        assert _row(store, mine) == ("ui-monitor", "read", "api-key", info.key_id, "site-a")
        assert "<td>site-a</td>" in mine.text
        assert "<td>site-b</td>" not in mine.text
    everyone = request(app, "GET", "/ui/monitor", headers=OPERATOR)
    assert "<td>site-a</td>" in everyone.text
    assert "<td>site-b</td>" in everyone.text
    # Not a whole number of days from 1 to 365: refused, and audited as such.
    refused = request(app, "GET", "/ui/monitor?days=0", headers={"X-API-Key": secret})
    assert refused.status_code == 400
    assert _row(store, refused) == ("ui-monitor", "refused", "api-key", info.key_id, "site-a")


def test_in_dev_mode_the_operator_is_the_dev_caller(
    app_rt: tuple[Starlette, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, runtime = app_rt
    monkeypatch.setattr(runtime, "settings", runtime.settings.model_copy(update={"dev": True}))
    answered = request(app, "GET", "/metrics")
    assert answered.status_code == 200
    assert _row(_store(runtime), answered) == ("metrics", "read", "dev", None, None)


def test_operator_reads_are_calls_but_not_answers_to_monitor(
    app_rt: tuple[Starlette, Runtime],
) -> None:
    """``tonle_outcomes`` counts every audited call; the monitoring counters (the page's
    sites, the refusal-rate alerts) count the answers to the service's users only."""
    app, _ = app_rt
    for path in ROUTES:
        assert request(app, "GET", path, headers=OPERATOR).status_code == 200
    samples = current_samples()
    calls = {s["service"] for s, n in samples["tonle_outcomes_total"] if n}
    answers = {s["service"] for s, n in samples["tonle_answers_total"] if n}
    assert calls >= OPERATOR_SERVICES
    assert not OPERATOR_SERVICES & answers
    page = request(app, "GET", "/ui/monitor", headers=OPERATOR).text
    assert "<td>metrics</td>" not in page
