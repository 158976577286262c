"""CDS Hooks, REST and FHIR output through the ASGI app, with real fixture models and
a real SQLite audit store (dev mode: authentication is tested in test_cds_auth.py)."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.riskassessment import RiskAssessment
from starlette.applications import Starlette

from models.who_chart import patient_cell
from models.who_cvd import WhoCvdInputs, who_cvd_risk
from serving.assess import assess
from serving.cards import ncd_card
from serving.http.caller import Caller
from serving.runtime import Runtime
from tests.ncd_fixtures import who_comparison, with_details
from tests.serving.cds_fixtures import app_for, cds_request, prefetch, runtime_for, shared_store

CVD = "/cds-services/ncd-cvd-risk"
DIABETES = "/cds-services/ncd-diabetes-risk"


@pytest.fixture(scope="module")
def store_home() -> Path:
    return shared_store()


@pytest.fixture(scope="module")
def runtime(store_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with runtime_for(store_home, tmp_path_factory.mktemp("rt")) as rt:
        yield rt


@pytest.fixture(scope="module")
def app(runtime: Runtime) -> Starlette:
    return app_for(runtime)


def call(
    app: Starlette, method: str, url: str, body: Any = None, raw: bytes | None = None, **kw: Any
) -> httpx.Response:
    headers = dict(kw.pop("headers", {}))

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            if raw is not None:
                headers.setdefault("content-type", "application/json")
                return await client.request(method, url, content=raw, headers=headers)
            return await client.request(method, url, json=body, headers=headers)

    return asyncio.run(go())


def recorded(card: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of the card's "record this risk assessment" suggestion."""
    for suggestion in card["suggestions"]:
        resources = [a["resource"] for a in suggestion["actions"]]
        if resources and resources[0]["resourceType"] == "RiskAssessment":
            return resources
    raise AssertionError("no RiskAssessment suggestion")


def audit_row(runtime: Runtime, response: httpx.Response) -> Any:
    rows = runtime.audit.rows(request_id=response.headers["x-request-id"])  # type: ignore[union-attr]
    assert len(rows) == 1
    return rows[0]


def test_discovery_lists_services_with_loinc_prefetch(app: Starlette) -> None:
    response = call(app, "GET", "/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert {"ncd-cvd-risk", "ncd-diabetes-risk"} <= set(services)
    cvd = services["ncd-cvd-risk"]
    assert cvd["hook"] == "patient-view"
    templates = " ".join(cvd["prefetch"].values())
    for code in ("8480-6", "85354-9", "2093-3", "2085-9", "4548-4", "39156-5", "72166-2"):
        assert f"http://loinc.org|{code}" in templates
    assert cvd["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert cvd["prefetch"]["diabetes"].startswith("Condition?patient={{context.patientId}}")


def test_discovery_is_audited(app: Starlette, runtime: Runtime) -> None:
    """``GET /cds-services`` goes through the one pipeline: its row is committed first."""
    response = call(app, "GET", "/cds-services")
    assert response.status_code == 200
    row = audit_row(runtime, response)
    assert (row.service_id, row.outcome, row.reason) == ("cds-discovery", "discovery", None)
    assert (row.caller_iss, row.card_ids, row.patient_ref) == ("dev", [], None)


def test_cvd_card_with_full_prefetch(app: Starlette, runtime: Runtime) -> None:
    response = call(app, "POST", CVD, cds_request())
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert len(cards) == 1
    card = cards[0]
    assert len(card["summary"]) < 140
    # The WHO chart leads: the summary is the printed chart cell the detail names, with
    # its band. The fixture model records no comparison with the chart, so its own
    # estimate is not on the card, and the card says why.
    who = re.search(
        r"WHO 2019 chart, [^:]+: \*\*(\d+)%\*\*, band \*\*([^*]+)\*\* \(the patient's cell: "
        r"age 60-64, systolic BP 160-179 mmHg, total cholesterol 6-6.9 mmol/L\)",
        card["detail"],
    )
    assert who is not None
    assert card["summary"] == (
        f"10-year heart attack or stroke risk, WHO chart: {who.group(1)}% ({who.group(2)})"
    )
    assert "model" not in card["summary"]
    assert "Local estimate" not in card["detail"]
    assert "is not shown: its recorded validation does not show it" in card["detail"]
    # The equation at the exact values is in the detail, named as such, not in the summary.
    assert re.search(r"WHO 2019 equation at this patient's exact values: \d+%", card["detail"])
    assert "equation" not in card["summary"]
    # Untreated, SBP 165: the WHO 2021 rule "start at once" fires and raises the
    # indicator above the chart band's.
    assert card["indicator"] == "critical"
    assert "rule `bp-start-now`" in card["detail"]
    assert "cvd-risk" in card["source"]["label"]
    assert "1.0.0" in card["source"]["label"]
    # The source link opens the model card page, without credentials.
    assert card["source"]["url"] == "http://testserver/ui/models/cvd-risk/1.0.0?lang=en"
    detail = card["detail"]
    # ML risk and WHO chart risk side by side, data used with dates, advisory line.
    assert "WHO 2019 chart" in detail
    assert "%" in detail
    assert "6.21 mmol/L" in detail  # 240 mg/dL converted by models.ncd_features
    assert "Systolic blood pressure" in detail
    assert "165 mmHg" in detail
    assert "not a diagnosis" in detail
    assert card["links"][0]["url"].startswith("http://testserver/ui/explain/")
    assert {r["code"] for r in card["overrideReasons"]} >= {"disagree", "data-wrong"}
    assessment = recorded(card)[0]
    assert assessment["prediction"][0]["qualitativeRisk"]["text"] == who.group(2)
    assert assessment["prediction"][0]["probabilityDecimal"] == int(who.group(1)) / 100
    row = audit_row(runtime, response)
    assert row.outcome == "advice"
    assert row.card_ids == [card["uuid"]]
    assert row.hook_instance == "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
    assert row.model_sha256 == runtime.ncd["ncd-cvd-risk"].metadata.sha256
    assert row.input_sha256
    assert len(row.input_sha256) == 64
    assert row.patient_ref == "Patient/p1"


def test_indicator_follows_site_band_mapping(app: Starlette, runtime: Runtime) -> None:
    # SBP under 140 and no other rule: the indicator is the site's for the chart band.
    low = call(app, "POST", CVD, cds_request(prefetch(age=45, sbp=110, smoker=False, chol=160)))
    high = call(app, "POST", CVD, cds_request(prefetch(age=72, sbp=130, smoker=True, chol=320)))
    low_card, high_card = low.json()["cards"][0], high.json()["cards"][0]
    low_ra = recorded(low_card)[0]["prediction"][0]
    high_ra = recorded(high_card)[0]["prediction"][0]
    assert low_ra["probabilityDecimal"] < high_ra["probabilityDecimal"]
    bands = ["<5%", "5-<10%", "10-<20%", "20-<30%", ">=30%"]
    indicators = []
    for card, pred in ((low_card, low_ra), (high_card, high_ra)):
        band = bands.index(pred["qualitativeRisk"]["text"])
        assert card["indicator"] == runtime.config.indicators[band]
        indicators.append(card["indicator"])
    assert indicators == ["info", "critical"]


def test_panel_sbp_and_units_are_read(app: Starlette) -> None:
    response = call(app, "POST", CVD, cds_request(prefetch(sbp=150, sbp_as_panel=True)))
    card = response.json()["cards"][0]
    assert "150 mmHg" in card["detail"]
    basis = recorded(card)[0]["basis"]
    assert {"reference": "Observation/bp1"} in basis


def test_khmer_card_text(app: Starlette, runtime: Runtime) -> None:
    response = call(app, "POST", CVD, cds_request(), headers={"accept-language": "km-KH"})
    summary = response.json()["cards"][0]["summary"]
    assert "ហានិភ័យ" in summary
    # The chart's ranges (cholesterol "6-6.9") with its decimal comma as the values.
    detail = response.json()["cards"][0]["detail"]
    assert "6-6,9 mmol/L" in detail
    assert "6-6.9" not in detail
    assert len(summary) < 140
    # Factor points (of a model shown beside the chart) use Khmer's decimal comma, as
    # its other numbers ("7,1 mmol/L").
    predictor = copy.copy(runtime.ncd["ncd-cvd-risk"])
    predictor.metadata = with_details(predictor.metadata, who_comparison=who_comparison())
    values: dict[str, float | str] = {
        "sex": "male", "age": 62.0, "smoking": 1.0, "sbp": 165.0, "total_chol": 6.2,
        "bmi": 27.5, "diabetes": 0.0,
    }  # fmt: skip
    advice = assess(predictor, values)
    details = {
        lang: ncd_card(
            advice, lang=lang, indicators=runtime.config.indicators, patient_id="p1",
            encounter_id=None, explain_url="https://example.org/x", region="",
        ).detail or ""
        for lang in ("en", "km")
    }  # fmt: skip
    # Percentage points are written out in Khmer, not as the English "pp".
    assert " pp)" not in details["km"]
    km_points = re.findall(r"\([+−](\d+[.,]\d) ពិន្ទុភាគរយ\)", details["km"])
    assert km_points, details["km"]
    assert all("," in p for p in km_points), km_points
    en_points = re.findall(r"\([+−](\d+[.,]\d) pp\)", details["en"])
    assert [p.replace(".", ",") for p in en_points] == km_points


def test_diabetes_service(app: Starlette, runtime: Runtime) -> None:
    response = call(app, "POST", DIABETES, cds_request())
    card = response.json()["cards"][0]
    assert "diabetes" in card["summary"].lower()
    assert "WHO 2019 chart" not in card["detail"]
    assert audit_row(runtime, response).model_name == "diabetes-risk"


def _in_remission(pf: dict[str, Any]) -> dict[str, Any]:
    condition = pf["diabetes"]["entry"][0]["resource"]
    condition["clinicalStatus"]["coding"][0]["code"] = "remission"
    condition["onsetDateTime"] = "2015-03-01"
    return pf


@pytest.mark.parametrize(
    "pf",
    [
        pytest.param(prefetch(diabetic=True), id="diagnosis"),
        pytest.param(prefetch(hba1c=7.1), id="HbA1c"),
        # No diagnosis and a normal HbA1c, but on metformin: models.diabetes_status, the
        # rule that also left such patients out of the diabetes model's training.
        pytest.param(prefetch(on_metformin=True), id="drug used in diabetes"),
        # Diagnosed years ago, in remission now: not at risk of a *new* onset either.
        pytest.param(_in_remission(prefetch(diabetic=True)), id="diagnosis in remission"),
    ],
)
def test_no_diabetes_risk_for_patients_who_have_diabetes(
    app: Starlette, runtime: Runtime, pf: dict[str, Any]
) -> None:
    response = call(app, "POST", DIABETES, cds_request(pf))
    assert response.json() == {"cards": []}
    row = audit_row(runtime, response)
    assert (row.outcome, row.reason) == ("no-advice", "already-has-outcome:diabetes")


@pytest.mark.parametrize(
    ("pf", "reason"),
    [
        (prefetch(days_ago=400), "stale-data"),
        (prefetch(sbp=400), "out-of-range:sbp"),
        (prefetch(age=30), "out-of-range:age"),
        (
            {**prefetch(), "sbp": {"resourceType": "Bundle", "type": "searchset"}},
            "insufficient-data:sbp",
        ),
        (prefetch(chol=5.0, chol_unit="g/L"), "unit:total_chol"),
    ],
)
def test_no_advice_is_empty_cards_and_audited(
    app: Starlette, runtime: Runtime, pf: dict[str, Any], reason: str
) -> None:
    response = call(app, "POST", CVD, cds_request(pf))
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    row = audit_row(runtime, response)
    assert row.outcome == "no-advice"
    assert row.reason is not None
    assert row.reason.startswith(reason)
    assert row.card_ids == []


_NO_SBP = {"resourceType": "Bundle", "type": "searchset"}


def test_no_advice_card_is_off_by_default(app: Starlette, runtime: Runtime) -> None:
    assert runtime.config.no_advice_card is False
    response = call(app, "POST", CVD, cds_request({**prefetch(), "sbp": _NO_SBP}))
    assert response.content == b'{"cards":[]}'  # exactly as without the option
    row = audit_row(runtime, response)
    assert (row.outcome, row.reason, row.card_ids) == ("no-advice", "insufficient-data:sbp", [])


@pytest.mark.parametrize(
    ("pf", "reason", "summary", "line"),
    [
        (
            {**prefetch(), "sbp": _NO_SBP},
            "insufficient-data:sbp",
            "No 10-year heart attack or stroke risk estimate: Systolic blood pressure not recorded",
            "- Systolic blood pressure: not recorded",
        ),
        (
            prefetch(sbp=400),
            "out-of-range:sbp",
            "No 10-year heart attack or stroke risk estimate: Systolic blood pressure outside "
            "the range the model accepts",
            "- Systolic blood pressure: 400 mmHg is outside the range the model accepts (",
        ),
        (
            prefetch(chol=5.0, chol_unit="g/L"),
            "unit:total_chol",
            "No 10-year heart attack or stroke risk estimate: Total cholesterol recorded in a "
            "unit Tonle cannot read",
            "- Total cholesterol: recorded in a unit Tonle cannot convert (g/L)",
        ),
        (
            # Every value 400 days old: too many to name in the summary, all in the detail.
            prefetch(days_ago=400),
            "stale-data:smoking",
            "No 10-year heart attack or stroke risk estimate: 4 values missing, out of date or "
            "unusable",
            "- Systolic blood pressure: last recorded ",
        ),
    ],
)
def test_no_advice_card_when_on_says_why(
    app: Starlette,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    pf: dict[str, Any],
    reason: str,
    summary: str,
    line: str,
) -> None:
    monkeypatch.setattr(runtime.config, "no_advice_card", True)
    response = call(app, "POST", CVD, cds_request(pf))
    assert response.status_code == 200
    cards = response.json()["cards"]
    assert len(cards) == 1
    card = cards[0]
    assert card["summary"] == summary
    assert len(card["summary"]) < 140
    assert card["indicator"] == "info"
    # No risk, no recommendation, nothing to accept, no explanation page.
    assert card["suggestions"] == []
    assert card["links"] == []
    assert card["overrideReasons"] == []
    assert card["source"]["label"] == "Tonle cvd-risk 1.0.0"
    assert card["source"]["url"] == "http://testserver/ui/models/cvd-risk/1.0.0?lang=en"
    detail = card["detail"]
    assert line in detail
    assert "This is not a risk estimate" in detail
    assert reason not in card["summary"] + detail  # the code is in the audit row below
    assert "RiskAssessment" not in response.text
    if reason != "unit:total_chol":
        assert not re.search(r"\d%", detail)  # no percentage anywhere: no risk is given
    row = audit_row(runtime, response)
    assert (row.outcome, row.reason) == ("no-advice", reason)
    assert row.card_ids == [card["uuid"]]
    assert row.input_sha256 is None


def test_no_advice_card_names_every_problem(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.config, "no_advice_card", True)
    stale = prefetch(days_ago=500)["totalChol"]
    response = call(
        app, "POST", CVD, cds_request({**prefetch(), "sbp": _NO_SBP, "totalChol": stale})
    )
    card = response.json()["cards"][0]
    assert card["summary"] == (
        "No 10-year heart attack or stroke risk estimate: Systolic blood pressure, "
        "Total cholesterol missing, out of date or unusable"
    )
    assert "- Systolic blood pressure: not recorded\n" in card["detail"]
    assert "- Total cholesterol: last recorded " in card["detail"]
    assert "more than 365 days ago" in card["detail"]
    # The audited reason is the first problem, as without the card.
    assert audit_row(runtime, response).reason == "insufficient-data:sbp"


def test_no_advice_card_diabetes_and_khmer(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.config, "no_advice_card", True)
    pf = {**prefetch(), "sbp": _NO_SBP}
    km = call(app, "POST", CVD, cds_request(pf), headers={"accept-language": "km-KH"})
    card = km.json()["cards"][0]
    assert card["summary"] == (
        "គ្មានការប៉ាន់ស្មានហានិភ័យគាំងបេះដូង ឬដាច់សរសៃឈាមខួរក្បាល 10 ឆ្នាំ៖ សម្ពាធឈាមស៊ីស្តូលិក មិនបានកត់ត្រា"
    )
    assert len(card["summary"]) < 140
    assert "នេះមិនមែនជាការប៉ាន់ស្មានហានិភ័យទេ" in card["detail"]
    assert card["source"]["url"].endswith("?lang=km")
    # The diabetes service names its own outcome; no birth date: insufficient-data:age.
    patient = {**pf["patient"]}
    del patient["birthDate"]
    response = call(app, "POST", DIABETES, cds_request({**prefetch(), "patient": patient}))
    card = response.json()["cards"][0]
    assert card["summary"] == "No 10-year diabetes risk estimate: Age not recorded"
    assert card["source"]["label"] == "Tonle diabetes-risk 1.0.0"
    assert audit_row(runtime, response).reason == "insufficient-data:age"


@pytest.mark.parametrize(
    ("path", "pf", "reason"),
    [
        (CVD, prefetch(age=30), "out-of-range:age"),
        # Missing blood pressure, but too young for the model anyway: no card asking for
        # a value that would still give no estimate (alert noise on every young patient).
        (CVD, {**prefetch(age=30), "sbp": _NO_SBP}, "insufficient-data:sbp"),
        (CVD, {**prefetch(age=30, days_ago=400)}, "stale-data:smoking"),
        (DIABETES, prefetch(diabetic=True), "already-has-outcome:diabetes"),
        (DIABETES, prefetch(diabetic=True, chol=5.0, chol_unit="g/L"), "unit:total_chol"),
    ],
)
def test_no_advice_card_not_for_patients_outside_the_model(
    app: Starlette,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    pf: dict[str, Any],
    reason: str,
) -> None:
    monkeypatch.setattr(runtime.config, "no_advice_card", True)
    response = call(app, "POST", path, cds_request(pf))
    assert response.content == b'{"cards":[]}'
    row = audit_row(runtime, response)
    assert (row.outcome, row.reason, row.card_ids) == ("no-advice", reason, [])


def test_no_advice_card_not_for_internal_errors(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.config, "no_advice_card", True)
    predictor = runtime.ncd["ncd-cvd-risk"]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("onnx exploded")

    monkeypatch.setattr(predictor, "explain", broken)
    response = call(app, "POST", CVD, cds_request())
    assert response.content == b'{"cards":[]}'
    assert (audit_row(runtime, response).outcome, audit_row(runtime, response).reason) == (
        "error",
        "internal-error",
    )
    monkeypatch.undo()
    monkeypatch.setattr(runtime.config, "no_advice_card", True)

    def card_fails(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("card.noadvice.missing.key")

    # A card that cannot be built never turns no-advice into a failure.
    monkeypatch.setattr("serving.cds_hooks.no_advice_card", card_fails)
    response = call(app, "POST", CVD, cds_request({**prefetch(), "sbp": _NO_SBP}))
    assert response.content == b'{"cards":[]}'
    row = audit_row(runtime, response)
    assert (row.outcome, row.reason, row.card_ids) == ("no-advice", "insufficient-data:sbp", [])


def test_missing_prefetch_without_fhir_server_is_412(app: Starlette, runtime: Runtime) -> None:
    pf = prefetch()
    pf["sbp"] = None
    del pf["totalChol"]
    response = call(app, "POST", CVD, cds_request(pf))
    assert response.status_code == 412
    assert set(response.json()["keys"]) == {"sbp", "totalChol"}
    row = audit_row(runtime, response)
    assert (row.outcome, row.reason) == ("refused", "prefetch-missing")


class _FakeAuth:
    """Allows only https://fhir.allowed.example for every caller."""

    async def authenticate(self, authorization: str | None, endpoint_url: str) -> Any:
        return Caller(iss="https://ehr.example", sub="tonle", tenant=None, kind="jwt")

    def fhir_server_allowed(self, caller: Any, fhir_server: str) -> bool:
        return fhir_server == "https://fhir.allowed.example/r4"


def test_missing_prefetch_is_fetched_from_allowlisted_server(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = prefetch(sbp=172)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert request.headers["authorization"] == "Bearer secret-token"
        assert request.url.path.endswith("/Observation")
        return httpx.Response(200, json=full["sbp"])

    monkeypatch.setattr(runtime, "fhir_transport", httpx.MockTransport(handler))
    monkeypatch.setattr(runtime, "cds_auth", _FakeAuth())
    auth = {
        "access_token": "secret-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "tonle",
    }
    pf = {**full, "sbp": None}
    ok = call(
        app, "POST", CVD,
        cds_request(pf, fhirServer="https://fhir.allowed.example/r4", fhirAuthorization=auth),
    )  # fmt: skip
    assert ok.status_code == 200
    assert "172 mmHg" in ok.json()["cards"][0]["detail"]
    assert len(seen) == 1
    assert "8480-6" in str(seen[0].url)
    refused = call(
        app, "POST", CVD,
        cds_request(pf, fhirServer="https://evil.example/r4", fhirAuthorization=auth),
    )  # fmt: skip
    assert refused.status_code == 412
    assert len(seen) == 1  # the caller-chosen server was never contacted


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b'{"hook": "patient-view", "x": NaN}', 400, "invalid-number"),
        (b'{"hook": "patient-view", "x": Infinity}', 400, "invalid-number"),
        (b'{"hook": "patient-view", "x": 1e309}', 400, "invalid-number"),
        (b'{"hook": "patient-view", "hook": "order-sign"}', 400, "duplicate-key"),
        (b"[" * 5000 + b"]" * 5000, 400, "too-deep"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, 400, "too-deep"),
        (b"not json", 400, "invalid-json"),
        (b"\xff\xfe", 400, "invalid-json"),
        (b'{"hook": "patient-view"}', 400, "invalid-field"),
        (b'{"x": "' + b"a" * (1 << 20) + b'"}', 413, "too-large"),
    ],
)
def test_bad_input_is_4xx_naming_the_problem(
    app: Starlette, runtime: Runtime, raw: bytes, status: int, reason: str
) -> None:
    response = call(app, "POST", CVD, raw=raw)
    assert response.status_code == status
    assert response.json()["error"] == reason
    assert audit_row(runtime, response).outcome == "refused"


def test_bad_field_is_named(app: Starlette) -> None:
    body = cds_request()
    body["context"]["patientId"] = "../../etc"
    response = call(app, "POST", CVD, body)
    assert response.status_code == 400
    assert response.json()["field"] == "context.patientId"
    wrong_hook = call(app, "POST", CVD, cds_request(hook="order-sign"))
    assert wrong_hook.status_code == 400
    assert wrong_hook.json()["field"] == "hook"
    media = call(app, "POST", CVD, raw=b"{}", headers={"content-type": "text/plain"})
    assert media.status_code == 415


def test_malformed_prefetch_resource_is_400(app: Starlette) -> None:
    pf = prefetch()
    pf["sbp"] = {"resourceType": "Patient", "id": "x"}
    response = call(app, "POST", CVD, cds_request(pf))
    assert response.status_code == 400
    assert response.json()["field"] == "prefetch.sbp"


def test_unknown_service_is_404(app: Starlette) -> None:
    assert call(app, "POST", "/cds-services/nope", cds_request()).status_code == 404


def test_feedback_is_stored_and_linked(app: Starlette, runtime: Runtime) -> None:
    response = call(app, "POST", CVD, cds_request())
    card_id = response.json()["cards"][0]["uuid"]
    feedback = {
        "feedback": [
            {
                "card": card_id,
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {
                        "system": "https://tonle.dev/fhir/CodeSystem/override-reason",
                        "code": "disagree",
                    },
                    "userComment": "recent BP normal",
                },
                "outcomeTimestamp": "2026-11-25T10:00:00Z",
            }
        ]
    }
    stored = call(app, "POST", f"{CVD}/feedback", feedback)
    assert stored.status_code == 200
    found = runtime.audit.feedback(card_uuid=card_id)  # type: ignore[union-attr]
    assert len(found) == 1
    assert found[0].outcome == "overridden"
    assert found[0].override_reason is not None
    assert found[0].override_reason.code == "disagree"
    bad = call(app, "POST", f"{CVD}/feedback", {"feedback": [{"card": card_id}]})
    assert bad.status_code == 400
    assert bad.json()["field"].startswith("feedback.0")


def _accepted(card_id: str) -> dict[str, Any]:
    return {
        "feedback": [
            {"card": card_id, "outcome": "accepted", "outcomeTimestamp": "2026-11-25T10:00:00Z"}
        ]
    }


def test_feedback_is_committed_with_its_audit_row(app: Starlette, runtime: Runtime) -> None:
    """Feedback goes through the one pipeline: its call's row (outcome ``feedback``) is
    committed with it, the card's patient named, and found by the call's request id."""
    answered = call(app, "POST", CVD, cds_request())
    card_id = answered.json()["cards"][0]["uuid"]
    stored = call(app, "POST", f"{CVD}/feedback", _accepted(card_id))
    assert stored.status_code == 200
    assert stored.json() == {}
    row = audit_row(runtime, stored)
    assert (row.service_id, row.outcome, row.reason) == ("feedback:ncd-cvd-risk", "feedback", None)
    assert (row.caller_iss, row.card_ids) == ("dev", [])
    assert row.patient_ref == audit_row(runtime, answered).patient_ref
    found = runtime.audit.feedback(card_uuid=card_id)  # type: ignore[union-attr]
    assert [(f.outcome, f.request_id) for f in found] == [
        ("accepted", answered.headers["x-request-id"])
    ]
    unknown = call(app, "POST", f"{CVD}/feedback", _accepted("0" * 32))
    assert unknown.status_code == 404
    assert (audit_row(runtime, unknown).outcome, audit_row(runtime, unknown).reason) == (
        "refused",
        "unknown-card",
    )
    nope = call(app, "POST", "/cds-services/nope/feedback", _accepted(card_id))
    assert nope.status_code == 404
    assert audit_row(runtime, nope).service_id == "feedback:unknown-service"


def test_feedback_is_not_stored_when_its_audit_row_cannot_be(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    card_id = call(app, "POST", CVD, cds_request()).json()["cards"][0]["uuid"]

    async def down(row: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(runtime.audit, "record_async", down)
    refused = call(app, "POST", f"{CVD}/feedback", _accepted(card_id))
    assert refused.status_code == 503
    assert refused.json() == {"error": "audit-unavailable"}
    monkeypatch.undo()
    assert runtime.audit.feedback(card_uuid=card_id) == []  # type: ignore[union-attr]


def test_fhir_output_validates_with_r4b(app: Starlette) -> None:
    card = call(app, "POST", CVD, cds_request()).json()["cards"][0]
    ra_json, prov_json = recorded(card)
    assessment = RiskAssessment.model_validate(ra_json)
    assert assessment.performer is not None
    assert assessment.performer.reference == "#tonle-cvd-risk-1.0.0"
    assert len(assessment.basis or []) == 4
    assert assessment.prediction is not None
    assert 0 < float(assessment.prediction[0].probabilityDecimal or 0) < 1
    device = Device.model_validate(ra_json["contained"][0])
    assert device.version is not None
    assert device.version[0].value == "1.0.0"
    assert any(i.system == "urn:tonle:model-sha256" for i in device.identifier or [])
    provenance = Provenance.model_validate(prov_json)
    assert provenance.target[0].reference == f"RiskAssessment/{ra_json['id']}"


def test_internal_error_fails_closed(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = runtime.ncd["ncd-cvd-risk"]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("onnx exploded")

    monkeypatch.setattr(predictor, "explain", broken)
    response = call(app, "POST", CVD, cds_request())
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    row = audit_row(runtime, response)
    assert (row.outcome, row.reason) == ("error", "internal-error")


def test_no_response_without_audit_row(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = runtime.audit.count()  # type: ignore[union-attr]

    def down(row: Any) -> None:
        raise OSError("disk full")

    async def down_async(row: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(runtime.audit, "record", down)
    monkeypatch.setattr(runtime.audit, "record_async", down_async)
    response = call(app, "POST", CVD, cds_request())
    assert response.status_code == 503
    assert response.json() == {"error": "audit-unavailable"}
    assert "x-request-id" not in response.headers
    monkeypatch.undo()
    # Once the store is back, the same call is answered, with its row.
    again = call(app, "POST", CVD, cds_request())
    assert again.status_code == 200
    assert audit_row(runtime, again).outcome == "advice"
    assert runtime.audit.count() == before + 1  # type: ignore[union-attr]


def test_rest_cvd_and_who(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"sex": "male", "age": 62, "smoking": True, "sbp": 165, "total_chol": 6.2,
            "diabetes": False, "bmi": 27.5}  # fmt: skip
    # The fixture model records no comparison with the WHO chart: as on the cards, its own
    # estimate is withheld and the chart answers.
    withheld = call(app, "POST", "/v1/risk/cvd", body).json()
    assert withheld["advice"] is True
    assert (withheld["model_shown"], withheld["model_withheld"]) == (
        False,
        "not-validated-against-who-chart",
    )
    assert "risk" not in withheld
    assert withheld["contributions"] == []
    assert withheld["who_chart"]["band"]
    predictor = runtime.ncd["ncd-cvd-risk"]
    validated = with_details(predictor.metadata, who_comparison=who_comparison())
    monkeypatch.setattr(predictor, "metadata", validated)
    response = call(app, "POST", "/v1/risk/cvd", body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["advice"] is True
    assert result["model_shown"] is True
    assert 0 < result["risk"] < 1
    # "who" is the WHO 2019 lab equation at exactly these values, for the site's region.
    equation = who_cvd_risk(
        WhoCvdInputs(sex="male", age=62, smoking=True, sbp=165, total_chol=6.2, diabetes=False),
        "lab",
        region=runtime.config.who_region,
        country=runtime.config.who_country,
    )
    assert result["who"]["risk"] == pytest.approx(equation.risk, abs=1e-12)
    assert (result["who"]["percent"], result["who"]["band"]) == (equation.percent, equation.band)
    # "who" is the equation at the exact values, "who_chart" the printed cell (62, 165, 6.2).
    cell = result["who_chart"]
    assert (cell["age"], cell["sbp"], cell["col"]) == ("60-64", "160-179", "6-6.9")
    printed = patient_cell(
        equation, region=runtime.config.who_region, country=runtime.config.who_country
    )
    assert printed is not None
    assert cell["band"] == printed.band
    assert result["model"]["sha256"] == runtime.ncd["ncd-cvd-risk"].metadata.sha256
    RiskAssessment.model_validate(result["risk_assessment"])
    assert audit_row(runtime, response).service_id == "rest:ncd-cvd-risk"
    assert result["missing"] == {}
    no_bmi = {k: v for k, v in body.items() if k != "bmi"}
    assert call(app, "POST", "/v1/risk/cvd", no_bmi).json()["missing"] == {"bmi": None}
    out_of_range = call(app, "POST", "/v1/risk/cvd", {**body, "age": 121})
    assert out_of_range.status_code == 422
    assert out_of_range.json()["field"] == "age"
    typo = call(app, "POST", "/v1/risk/cvd", {**body, "sbpp": 1})
    assert typo.status_code == 400
    assert typo.json()["field"] == "sbpp"
    who = call(app, "POST", "/v1/who-cvd", {**body, "model": "lab", "country": "KHM"})
    assert who.status_code == 200
    assert who.json()["country_code"] == "KHM"
    khm = who_cvd_risk(
        WhoCvdInputs(sex="male", age=62, smoking=True, sbp=165, total_chol=6.2, diabetes=False),
        "lab",
        country="KHM",
    )
    assert (who.json()["risk"], who.json()["percent"]) == (pytest.approx(khm.risk), khm.percent)
    # Audited like every answer.
    who_row = audit_row(runtime, who)
    assert (who_row.service_id, who_row.outcome) == ("rest:who-cvd", "advice")
    # The printed chart cell comes with the equation, the same cell the risk route names.
    assert who.json()["chart"] == result["who_chart"]
    young = call(app, "POST", "/v1/who-cvd", {**body, "age": 30, "model": "lab"})
    assert young.status_code == 422
    assert young.json()["field"] == "age"
    spec = call(app, "GET", "/v1/openapi.json").json()
    assert {"/v1/risk/cvd", "/v1/risk/diabetes", "/v1/who-cvd"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["RiskRequest"]["examples"]
    assert "description" in spec["components"]["schemas"]["RiskRequest"]["properties"]["sbp"]


def test_cors_only_for_allowed_origin(runtime: Runtime) -> None:
    settings = runtime.settings.model_copy(update={"cors_origins": ["https://ehr.example"]})
    application = app_for(runtime, settings)
    preflight = {"access-control-request-method": "POST"}
    ok = call(application, "OPTIONS", CVD, headers={"origin": "https://ehr.example", **preflight})
    assert ok.headers.get("access-control-allow-origin") == "https://ehr.example"
    other = call(
        application, "OPTIONS", CVD, headers={"origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in other.headers


def test_summary_is_short_in_every_language(app: Starlette) -> None:
    for lang in ("en", "km"):
        for path in (CVD, DIABETES):
            card = call(app, "POST", path, cds_request(), headers={"accept-language": lang})
            assert len(card.json()["cards"][0]["summary"]) < 140


class _RaisingAuth:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def authenticate(self, authorization: str | None, endpoint_url: str) -> Any:
        raise self.error

    def fhir_server_allowed(self, caller: Any, fhir_server: str) -> bool:
        return False


class _RaisingKeys:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def authenticate(self, header_value: str | None) -> Any:
        raise self.error


def test_refused_and_unavailable_auth(
    app: Starlette, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.auth import AuthError, AuthUnavailable

    monkeypatch.setattr(runtime, "cds_auth", _RaisingAuth(AuthError("bad-signature")))
    rows = runtime.audit.count()  # type: ignore[union-attr]
    refused = call(app, "POST", CVD, cds_request())
    assert refused.status_code == 401
    assert refused.content == b'{"error":"unauthorized"}'
    assert call(app, "GET", "/cds-services").content == refused.content
    # Refused callers are counted, not given a durable row (anyone can send them).
    assert "x-request-id" not in refused.headers
    assert runtime.audit.count() == rows  # type: ignore[union-attr]
    monkeypatch.setattr(runtime, "cds_auth", _RaisingAuth(AuthUnavailable("store down")))
    down = call(app, "POST", CVD, cds_request())
    assert down.status_code == 503
    assert down.json() == {"error": "auth-unavailable"}
    assert call(app, "GET", "/cds-services").status_code == 503
    body = {"sex": "male", "age": 62, "smoking": True, "sbp": 165}
    monkeypatch.setattr(runtime, "api_keys", _RaisingKeys(AuthError("unknown-key")))
    assert call(app, "POST", "/v1/risk/cvd", body).status_code == 401
    monkeypatch.setattr(runtime, "api_keys", _RaisingKeys(AuthUnavailable("store down")))
    assert call(app, "POST", "/v1/risk/cvd", body).status_code == 503


def test_cds_hooks_1_0_request_is_tolerated(app: Starlette) -> None:
    body = cds_request(user="Practitioner/example")
    del body["context"]["userId"]
    response = call(app, "POST", CVD, body)
    assert response.status_code == 200
    assert len(response.json()["cards"]) == 1


def test_inputs_not_recorded_are_on_the_card(app: Starlette, runtime: Runtime) -> None:
    """A missing optional input is listed with what the model scored it as: from the
    artifact's measured ``missing_inputs`` when it names a value, else "filled in"."""
    # The fixture model is not shown beside the chart: what it made of a missing input
    # is not on the card either (the non-lab chart is used without cholesterol).
    no_chol = call(app, "POST", CVD, cds_request(prefetch(chol=None))).json()["cards"][0]
    assert "Not recorded" not in no_chol["detail"]
    assert "the model filled it in" not in no_chol["detail"]
    assert "BMI 25-29 kg/m²" in no_chol["detail"]

    predictor = copy.copy(runtime.ncd["ncd-cvd-risk"])
    measured = {"diabetes": {"missing_in_training": 0.0, "scored_as": 0.0}}
    predictor.metadata = with_details(
        predictor.metadata, missing_inputs=measured, who_comparison=who_comparison()
    )
    values: dict[str, float | str] = {
        "sex": "male", "age": 60.0, "smoking": 1.0, "sbp": 150.0, "total_chol": 5.5, "bmi": 27.0,
    }  # fmt: skip
    advice = assess(predictor, values)
    assert advice.missing == {"diabetes": 0.0}
    card = ncd_card(
        advice, lang="en", indicators=runtime.config.indicators, patient_id="p1",
        encounter_id=None, explain_url="https://example.org/x", region="",
    )  # fmt: skip
    assert card.detail is not None
    assert "| Diabetes | **not recorded: the model scored it as no** | |" in card.detail
    km = ncd_card(
        advice, lang="km", indicators=runtime.config.indicators, patient_id="p1",
        encounter_id=None, explain_url="https://example.org/x", region="",
    )  # fmt: skip
    assert km.detail is not None
    assert "មិនបានកត់ត្រា៖ ម៉ូដែលបានគណនាវាជា ទេ" in km.detail


@pytest.mark.parametrize(
    ("measured", "lang", "text"),
    [
        # demo-04's heart card: trees, cholesterol never missing in training, no single
        # value gives the model's answer; it said only "the model filled it in".
        ({"missing_in_training": 0.0, "scored_as": None}, "en",
         "not recorded: no single value stands in for it; the model took its commonest "
         "branch, close to a typical patient's value"),
        ({"missing_in_training": 0.2, "scored_as": None}, "en",
         "not recorded: the model scored it as unknown, by a route it learned from "
         "patients without it"),
        ({"missing_in_training": 0.0, "scored_as": 4.21}, "en",
         "not recorded: the model scored it as 4.21 mmol/L"),
        ({"missing_in_training": 0.0, "scored_as": 4.21}, "km",
         "មិនបានកត់ត្រា៖ ម៉ូដែលបានគណនាវាជា 4,21 mmol/L"),
        ({"missing_in_training": 0.0, "scored_as": None}, "km",
         "មិនបានកត់ត្រា៖ គ្មានតម្លៃតែមួយជំនួសវាទេ"),
    ],
)  # fmt: skip
def test_missing_input_says_what_the_model_scored_it_as(
    runtime: Runtime, measured: dict[str, float | None], lang: str, text: str
) -> None:
    """A card names the value a missing input was scored as, and where no single value
    stands in for it, what the model did instead (never just "filled it in")."""
    predictor = copy.copy(runtime.ncd["ncd-cvd-risk"])
    predictor.metadata = with_details(
        predictor.metadata,
        missing_inputs={"total_chol": measured},
        who_comparison=who_comparison(),
    )
    values: dict[str, float | str] = {
        "sex": "male", "age": 52.0, "smoking": 1.0, "sbp": 146.0, "bmi": 29.3, "diabetes": 0.0,
    }  # fmt: skip
    advice = assess(predictor, values)
    assert advice.missing == {"total_chol": measured["scored_as"]}
    card = ncd_card(
        advice, lang=lang, indicators=runtime.config.indicators, patient_id="p1",
        encounter_id=None, explain_url="https://example.org/x", region="",
    )  # fmt: skip
    assert card.detail is not None
    assert text in card.detail, card.detail
