"""Hostile and wrong inputs to the NCD CDS services: markdown in EHR text, measurements
dated in the future, FHIR ids that would rewrite references, dates off the calendar."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from serving.assess import NoAdvice, Problem
from serving.cards import md
from serving.fhir_in import PrefetchError, extract
from serving.no_advice_card import no_advice_card
from serving.runtime import Runtime
from tests.serving.cds_fixtures import (
    app_for,
    cds_request,
    observation,
    prefetch,
    runtime_for,
    shared_store,
)

CVD = "/cds-services/ncd-cvd-risk"
INJECTIONS = [
    "[Fix](https://example.org)",
    "![](http://example.org/p)",
    "<img src=x onerror=alert(1)>",
    "**bold** _it_ `code` | col |",
    "www.example.org/x",
    "line\n\n# heading",
]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with runtime_for(shared_store(), tmp_path_factory.mktemp("rt")) as rt:
        yield rt


@pytest.fixture(scope="module")
def app(runtime: Runtime) -> Starlette:
    return app_for(runtime)


def call(app: Starlette, body: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(CVD, json=body)

    return asyncio.run(go())


def _with_chol(pf: dict[str, Any], **fields: Any) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    resource = observation("2093-3", 5.2, "mmol/L", today - timedelta(days=10), "chol1")
    resource.update(fields)
    pf["totalChol"] = {"resourceType": "Bundle", "entry": [{"resource": resource}]}
    return pf


# --- markdown -------------------------------------------------------------------------


@pytest.mark.parametrize("text", INJECTIONS)
def test_md_leaves_no_markup(text: str) -> None:
    out = md(text)
    assert "\n" not in out
    for unsafe in ("[", "]", "(", ")", "<", ">", "*", "_", "`", "|", "!", "#"):
        assert out.count(unsafe) == out.count("\\" + unsafe), (unsafe, out)
    assert "://" not in out
    assert "www." not in out.lower()


@pytest.mark.parametrize("unit", INJECTIONS[:2])
def test_unit_in_the_no_advice_card_is_inert(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, unit: str
) -> None:
    """Security review: an Observation unit of ``[Fix](https://example.org)`` appeared
    verbatim in the no-advice card (a link, or an image fetched from elsewhere)."""
    monkeypatch.setattr(runtime.config, "no_advice_card", True)
    pf = _with_chol(prefetch())
    pf["totalChol"]["entry"][0]["resource"]["valueQuantity"].update(unit=unit, code=unit)
    response = call(app, cds_request(pf))
    assert response.status_code == 200
    card = response.json()["cards"][0]
    assert unit not in card["detail"]
    assert md(unit[:20]) in card["detail"]  # shown, escaped (the unit is cut at 20)
    assert "](http" not in card["detail"]


def test_out_of_range_text_value_is_inert() -> None:
    from models.details import NcdDetails
    from models.metadata import ModelMetadata
    from tests.ncd_fixtures import FIXTURE_FEATURES

    meta = ModelMetadata(
        name="cvd-risk", version="1.0.0", task="ncd-risk", features=FIXTURE_FEATURES,
        extra=NcdDetails(outcome="cvd"),
    )  # fmt: skip
    problem = Problem("out-of-range", "sbp", "not a number", value="[x](https://e.org)")
    card = no_advice_card(NoAdvice.of([problem]), meta, lang="en", max_age_days=365)
    assert card.detail is not None
    assert "[x](https" not in card.detail
    assert "\\[x\\]\\(https\\:\\/\\/e.org\\)" in card.detail


# --- measurements dated in the future -----------------------------------------------


def test_future_measurement_does_not_beat_a_real_one() -> None:
    """A 2031 SBP of 210 won over June 2026's as "the freshest"."""
    today = date(2026, 6, 15)
    now = datetime(2026, 6, 15, 9, 0, tzinfo=UTC)
    pf = prefetch()
    real = observation("8480-6", 150, "mm[Hg]", date(2026, 6, 1), "sbp-real")
    future = observation("8480-6", 210, "mm[Hg]", date(2031, 1, 1), "sbp-future")
    pf["sbp"] = {"resourceType": "Bundle", "entry": [{"resource": real}, {"resource": future}]}
    found = extract(pf, today, now)
    assert "sbp" not in found.values
    assert found.problems["sbp"] == "future-dated:2031-01-01"


@pytest.mark.parametrize(
    ("stamp", "refused"),
    [
        ("2026-06-15T09:05:00Z", False),  # 5 min ahead: the EHR's clock may run fast
        ("2026-06-15T09:30:00Z", True),
        ("2026-06-15T11:00:00+02:00", False),  # 09:00 UTC
        ("2026-06-16", True),
        ("2026-06-15", False),
    ],
)
def test_clock_skew_allowance(stamp: str, refused: bool) -> None:
    pf = prefetch()
    resource = observation("8480-6", 150, "mm[Hg]", date(2026, 6, 1), "sbp1")
    resource["effectiveDateTime"] = stamp
    pf["sbp"] = {"resourceType": "Bundle", "entry": [{"resource": resource}]}
    found = extract(pf, date(2026, 6, 15), datetime(2026, 6, 15, 9, 0, tzinfo=UTC))
    assert ("sbp" in found.problems) is refused
    assert ("sbp" in found.values) is not refused


def test_future_measurement_is_no_advice_with_its_reason(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    pf = prefetch()
    future = (datetime.now(UTC) + timedelta(days=400)).date()
    pf["sbp"]["entry"][0]["resource"]["effectiveDateTime"] = f"{future.isoformat()}T09:00:00Z"
    response = call(app, cds_request(pf))
    assert response.status_code == 200
    assert response.json()["cards"] == []
    rows = runtime.audit.rows(request_id=response.headers["x-request-id"])  # type: ignore[union-attr]
    assert rows[0].outcome == "no-advice"
    assert rows[0].reason == "future-dated:sbp"
    monkeypatch.setattr(runtime.config, "no_advice_card", True)
    card = call(app, cds_request(pf)).json()["cards"][0]
    assert card["summary"] == (
        "No 10-year heart attack or stroke risk estimate: "
        "Systolic blood pressure dated in the future"
    )
    assert "in the future; correct the date" in card["detail"]


# --- FHIR ids and calendar dates ----------------------------------------------------


@pytest.mark.parametrize(
    "bad_id", ["../Patient/x", "a/b", "x" * 65, "", "id with space", "sbp_1", "ok#frag"]
)
def test_observation_id_must_be_a_fhir_id(bad_id: str) -> None:
    pf = _with_chol(prefetch(), id=bad_id)
    with pytest.raises(PrefetchError, match="totalChol"):
        extract(pf, datetime.now(UTC).date())


@pytest.mark.parametrize(
    ("key", "resource"),
    [
        ("patient", {"resourceType": "Patient", "id": "../x", "gender": "male"}),
        ("diabetes", {"resourceType": "Condition", "id": "Condition/1"}),
        (
            "medicationRequests",
            {"resourceType": "MedicationRequest", "id": "a/../b", "status": "active"},
        ),
    ],
)
def test_other_resource_ids_must_be_fhir_ids(key: str, resource: dict[str, Any]) -> None:
    pf = prefetch()
    pf[key] = (
        resource
        if key == "patient"
        else {"resourceType": "Bundle", "entry": [{"resource": resource}]}
    )
    with pytest.raises(PrefetchError, match=key):
        extract(pf, datetime.now(UTC).date())


def test_encounter_id_must_be_a_fhir_id(app: Starlette) -> None:
    """``Encounter/../Patient/x`` went into the RiskAssessment we propose to write."""
    body = cds_request(prefetch())
    body["context"]["encounterId"] = "../Patient/x"
    response = call(app, body)
    assert response.status_code == 400
    assert response.json()["field"] == "context.encounterId"
    body["context"]["encounterId"] = "enc-1.2"
    response = call(app, body)
    assert response.status_code == 200
    card = response.json()["cards"][0]
    resources = [a["resource"] for s in card["suggestions"] for a in s["actions"]]
    assert {"reference": "Encounter/enc-1.2"} in [r.get("encounter") for r in resources]


@pytest.mark.parametrize("stamp", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_date_off_the_calendar_is_4xx(app: Starlette, stamp: str) -> None:
    """A far-future date raised OverflowError: a 500."""
    pf = prefetch()
    pf["sbp"]["entry"][0]["resource"]["effectiveDateTime"] = stamp
    response = call(app, cds_request(pf))
    assert response.status_code == 400
    assert response.json()["field"] == "prefetch.sbp"
