"""NCD cards: the WHO chart leads, the protocol table proposes, urgency orders.

Unit level (assess -> ncd_card) with the real fixture models and the shipped protocol
table, plus one check through the CDS Hooks route.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from models.config import ConfigError
from models.ncd_predictor import NcdPredictor
from serving.assess import Advice, assess
from serving.cards import TB_REFERRAL, by_urgency, ncd_card
from serving.cds_models import Action, Card, Source, Suggestion
from serving.config import ProtocolConfig
from serving.protocol import ActiveProtocol, Approval, load_protocol
from serving.runtime import Runtime
from tests.ncd_fixtures import who_comparison, with_details
from tests.serving.cds_fixtures import runtime_for, shared_store

TABLE = Path("configs/protocol.yaml")
INDICATORS = ["info", "info", "warning", "critical", "critical"]
TODAY = date(2026, 6, 15)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with runtime_for(shared_store(), tmp_path_factory.mktemp("rt")) as rt:
        yield rt


def _approved() -> ActiveProtocol:
    sha = hashlib.sha256(TABLE.read_bytes()).hexdigest()
    return load_protocol(TABLE, Approval(by="Dr Test, clinical lead", on=TODAY, sha256=sha))


def _unapproved() -> ActiveProtocol:
    return load_protocol(TABLE)


def _validated(predictor: NcdPredictor, good: bool | None) -> NcdPredictor:
    """``predictor`` whose metadata records (or not) a comparison with the WHO chart."""
    copied = copy.copy(predictor)
    comparison = None if good is None else who_comparison(good)
    copied.metadata = with_details(copied.metadata, who_comparison=comparison)
    return copied


def _patient(**overrides: float | str) -> dict[str, float | str]:
    values: dict[str, float | str] = {
        "sex": "male", "age": 62.0, "smoking": 1.0, "sbp": 132.0, "total_chol": 6.2,
        "bmi": 27.5, "diabetes": 0.0, "bp_treated": 0.0,
    }  # fmt: skip
    values.update(overrides)
    return values


def _advice(
    predictor: NcdPredictor,
    values: dict[str, float | str],
    protocol: ActiveProtocol | None = None,
    history: dict[str, bool | None] | None = None,
    dates: dict[str, date] | None = None,
) -> Advice:
    from serving.assess import WhoSettings

    outcome = predictor.metadata.ncd.outcome
    return assess(
        predictor,
        values,
        dates=dates or {},
        today=TODAY,
        who=WhoSettings() if outcome == "cvd" else None,
        protocol=protocol or _unapproved(),
        history=history
        if history is not None
        else {"established_cvd": False, "diabetes_diagnosed": False},
    )


def _card(advice: Advice, lang: str = "en", indicators: list[str] | None = None) -> Card:
    return ncd_card(
        advice,
        lang=lang,
        indicators=indicators or INDICATORS,  # type: ignore[arg-type]
        patient_id="p1",
        encounter_id="e1",
        explain_url="https://example.org/x",
        region="KHM",
        today=TODAY,
    )


def _resources(card: Card, kind: str) -> list[dict[str, Any]]:
    return [
        a.resource
        for s in card.suggestions
        for a in s.actions
        if a.resource and a.resource["resourceType"] == kind
    ]


# --- the guideline leads ------------------------------------------------------------


@pytest.mark.parametrize("good", [None, False])
def test_chart_leads_and_model_not_shown_without_validation(
    runtime: Runtime, good: bool | None
) -> None:
    """QA: "8% (model); WHO chart 15%" shown as information for a 58-year-old diabetic
    with SBP 165. Now the chart's cell sets summary and indicator; a model whose record
    does not show it at least as good as the chart is not on the card."""
    predictor = _validated(runtime.ncd["ncd-cvd-risk"], good)
    advice = _advice(predictor, _patient(age=58.0, diabetes=1.0, sbp=135.0, bp_treated=1.0))
    cell = advice.who_cell
    assert cell is not None
    card = _card(advice)
    assert card.summary == (
        f"10-year heart attack or stroke risk, WHO chart: {cell.percent}% ({cell.band})"
    )
    assert card.indicator == INDICATORS[cell.band_index]
    assert card.detail is not None
    assert f"{advice.percent}%" not in card.summary
    assert "Local estimate" not in card.detail
    assert "pp)" not in card.detail  # no model factors either
    assert "is not shown: its recorded validation does not show it" in card.detail
    assessment = _resources(card, "RiskAssessment")[0]
    assert assessment["prediction"][0]["probabilityDecimal"] == cell.percent / 100
    assert assessment["method"]["text"].startswith("WHO 2019 CVD risk chart")


def test_validated_model_is_a_second_labelled_estimate(runtime: Runtime) -> None:
    predictor = _validated(runtime.ncd["ncd-cvd-risk"], True)
    seen_differ = seen_same = False
    for age in (42.0, 50.0, 58.0, 66.0, 73.0):
        for sbp in (110.0, 135.0, 150.0, 170.0, 190.0):
            advice = _advice(predictor, _patient(age=age, sbp=sbp, bp_treated=1.0))
            cell = advice.who_cell
            assert cell is not None
            card = _card(advice)
            assert card.detail is not None
            assert card.summary.startswith(
                f"10-year heart attack or stroke risk, WHO chart: {cell.percent}% ({cell.band})"
            )
            assert card.summary.endswith(f"; local model {advice.percent}%")
            assert f"Local estimate, model cvd-risk 1.0.0: **{advice.percent}%**" in card.detail
            differ = cell.band_index != advice.band_index
            said = "fall in different bands; the card follows the WHO chart" in card.detail
            assert said == differ
            seen_differ |= differ
            seen_same |= not differ
            # The indicator follows the chart's band (raised only by a rule that fired).
            raised = [f.row.indicator for f in advice.fired if f.row.indicator]
            if not raised:
                assert card.indicator == INDICATORS[cell.band_index]
    assert seen_differ
    assert seen_same


def test_chart_unavailable_is_said_for_clinicians(runtime: Runtime) -> None:
    """Age 76 is off the chart: no developer text ("allow_extrapolation"), no model
    number (not validated), no indicator above info, no RiskAssessment to record."""
    predictor = runtime.ncd["ncd-cvd-risk"]
    values = _patient(age=74.0)
    advice = _advice(predictor, values)
    advice.who, advice.who_cell, advice.who_reason = None, None, "outside:age"
    for lang, text in (
        ("en", "No WHO chart risk for this patient: Age is outside the range the WHO chart"),
        ("km", "គ្មានហានិភ័យតាមតារាង WHO"),
    ):
        card = _card(advice, lang)
        assert card.summary.startswith(text), card.summary
        assert card.detail is not None
        assert "allow_extrapolation" not in card.detail + card.summary
        assert card.indicator == "info"
        assert not _resources(card, "RiskAssessment")


def test_who_reason_codes_from_the_chart(runtime: Runtime) -> None:
    from serving.assess import WhoSettings, who_for

    result, reason = who_for(_patient(age=80.0), WhoSettings())
    assert result is None
    assert reason == "outside:age"
    result, reason = who_for({k: v for k, v in _patient().items() if k != "sbp"}, WhoSettings())
    assert (result, reason) == (None, "missing:sbp")
    # Neither chart's inputs complete (no cholesterol, no BMI): the non-lab chart's BMI is
    # missing, not "outside the range" (the card said so before).
    no_lab_no_bmi = {k: v for k, v in _patient().items() if k not in ("total_chol", "bmi")}
    assert who_for(no_lab_no_bmi, WhoSettings()) == (None, "missing:bmi")


@pytest.mark.parametrize("warning", [10, 20, 35])
def test_diabetes_cards_have_their_own_scale(runtime: Runtime, warning: int) -> None:
    """A 26 % diabetes risk showed red "critical" above an untreated smoker with SBP 178
    at "warning": diabetes cards never use the CVD table and are never critical."""
    predictor = runtime.ncd["ncd-diabetes-risk"]
    percents = []
    for age in (41.0, 55.0, 70.0):
        for bmi in (19.0, 27.0, 38.0):
            advice = _advice(predictor, _patient(age=age, bmi=bmi, sbp=125.0, bp_treated=0.0))
            card = ncd_card(
                advice, lang="en", indicators=["critical"] * 5, patient_id="p1",
                encounter_id=None, explain_url="https://example.org/x", region="",
                diabetes_warning_percent=warning, today=TODAY,
            )  # fmt: skip
            expected = "warning" if advice.percent >= warning else "info"
            assert card.indicator == expected, (advice.percent, warning)
            percents.append(advice.percent)
    assert min(percents) < warning or max(percents) >= warning


# --- the protocol -------------------------------------------------------------------


def test_shipped_table_cites_every_row_and_gates_hearts_rows() -> None:
    protocol = _unapproved()
    assert not protocol.approved
    rows = protocol.table.rows
    assert len(rows) >= 10
    for row in rows:
        assert row.source.document.startswith("WHO")
        assert row.source.section
    hearts = [r for r in rows if "HEARTS" in r.source.document]
    assert hearts
    assert all(r.site_must_confirm for r in hearts)


def test_unapproved_table_gives_no_drug_and_names_the_rule(runtime: Runtime) -> None:
    """Untreated smoker, SBP 178: WHO 2021 says start at once. Before approval the
    card names the rule but proposes no drug; the HEARTS band rows do not fire."""
    advice = _advice(runtime.ncd["ncd-cvd-risk"], _patient(sbp=178.0))
    assert [f.row.id for f in advice.fired] == ["bp-start-now"]
    card = _card(advice)
    assert card.indicator == "critical"
    assert card.detail is not None
    assert "rule `bp-start-now`" in card.detail
    assert "Guideline for the pharmacological treatment of hypertension in adults" in card.detail
    assert "not yet approved by the site" in card.detail
    assert not _resources(card, "MedicationRequest")
    tasks = _resources(card, "Task")
    assert len(tasks) == 1
    Task.model_validate(tasks[0])
    assert tasks[0]["intent"] == "proposal"
    assert tasks[0]["restriction"]["period"]["end"] == "2026-07-15"  # 1 month
    assert "bp-start-now" in tasks[0]["note"][0]["text"]
    assert card.selectionBehavior == "any"


def test_approved_table_proposes_drugs_and_band_actions(runtime: Runtime) -> None:
    advice = _advice(runtime.ncd["ncd-cvd-risk"], _patient(sbp=178.0), protocol=_approved())
    cell = advice.who_cell
    assert cell is not None
    assert cell.band_index >= 3
    fired = [f.row.id for f in advice.fired]
    assert "bp-start-now" in fired
    assert len({"hearts-band-30", "hearts-band-20"} & set(fired)) == 1
    card = _card(advice)
    assert card.detail is not None
    assert "approved by Dr Test, clinical lead on 15 Jun 2026" in card.detail
    drugs = _resources(card, "MedicationRequest")
    codes = {d["medicationCodeableConcept"]["coding"][0]["code"] for d in drugs}
    assert codes == {"C08CA01", "C10AA"}
    for drug in drugs:
        parsed = MedicationRequest.model_validate(drug)
        assert (parsed.status, parsed.intent) == ("draft", "proposal")
        assert drug["encounter"] == {"reference": "Encounter/e1"}
    labels = [s.label for s in card.suggestions]
    assert any("(rule bp-start-now)" in label for label in labels)
    # One follow-up, at the shortest interval any fired rule sets (BP: 1 month).
    assert len(_resources(card, "Task")) == 1
    assert any(label.startswith("Follow-up visit within 1 month (") for label in labels)


def test_approval_of_another_table_refuses_to_load(tmp_path: Path) -> None:
    changed = tmp_path / "protocol.yaml"
    changed.write_bytes(TABLE.read_bytes() + b"\n# edited after approval\n")
    stale = Approval(by="Dr Test", on=TODAY, sha256=hashlib.sha256(TABLE.read_bytes()).hexdigest())
    with pytest.raises(ConfigError, match="changed after approval"):
        ProtocolConfig(table=changed, approval=stale).load()


def test_unknown_treatment_status_starts_no_drug(runtime: Runtime) -> None:
    """Fail closed: a medication list not read in full leaves bp_treated unknown; no
    "start treatment" rule may fire on it."""
    values = _patient(sbp=178.0)
    del values["bp_treated"]
    advice = _advice(runtime.ncd["ncd-cvd-risk"], values, protocol=_approved())
    assert not [f for f in advice.fired if f.row.topic == "bp"]


def test_treated_and_at_target_follow_up_in_three_months(runtime: Runtime) -> None:
    advice = _advice(runtime.ncd["ncd-cvd-risk"], _patient(sbp=128.0, dbp=78.0, bp_treated=1.0))
    assert [f.row.id for f in advice.fired] == ["bp-treated-at-target"]
    card = _card(advice)
    assert _resources(card, "Task")[0]["restriction"]["period"]["end"] == "2026-09-15"


def test_established_cvd_needs_no_chart(runtime: Runtime) -> None:
    advice = _advice(
        runtime.ncd["ncd-cvd-risk"],
        _patient(age=45.0, sbp=134.0, smoking=0.0, total_chol=4.5),
        history={"established_cvd": True, "diabetes_diagnosed": False},
    )
    fired = [f.row.id for f in advice.fired]
    assert fired[:2] == ["cvd-established", "bp-start-cvd-130"]
    card = _card(advice)
    assert card.summary.startswith("Established cardiovascular disease: high risk")
    assert card.indicator == "critical"


def test_glycaemia_over_the_diagnostic_cut_without_a_diagnosis(runtime: Runtime) -> None:
    values = _patient(diabetes=1.0, hba1c=7.1)
    advice = _advice(runtime.ncd["ncd-cvd-risk"], values)
    assert "dm-diagnostic-threshold" in [f.row.id for f in advice.fired]
    service = _resources(_card(advice), "ServiceRequest")
    assert service
    assert service[0]["code"]["coding"][0]["code"] == "4548-4"
    ServiceRequest.model_validate(service[0])
    for history in (
        {"established_cvd": False, "diabetes_diagnosed": True},
        {"established_cvd": None, "diabetes_diagnosed": None},  # not known: no rule
    ):
        advice = _advice(runtime.ncd["ncd-cvd-risk"], values, history=history)
        assert "dm-diagnostic-threshold" not in [f.row.id for f in advice.fired]


def test_test_suggested_only_without_a_recent_result(runtime: Runtime) -> None:
    """QA: every diabetes card said "Order a fasting glucose or HbA1c test", even with
    an HbA1c from 7 days ago."""
    predictor = runtime.ncd["ncd-diabetes-risk"]
    values = _patient(hba1c=5.6, sbp=125.0)
    recent = _advice(predictor, values, dates={"hba1c": TODAY - timedelta(days=7)})
    assert not _resources(_card(recent), "ServiceRequest")
    assert "HbA1c" not in " ".join(s.label for s in _card(recent).suggestions)
    old = _advice(predictor, values, dates={"hba1c": TODAY - timedelta(days=400)})
    none = _advice(predictor, _patient(sbp=125.0))
    for advice in (old, none):
        service = _resources(_card(advice), "ServiceRequest")
        assert [s["code"]["coding"][0]["code"] for s in service] == ["4548-4"]
        assert "(rule dm-test)" in " ".join(s.label for s in _card(advice).suggestions)


def test_khmer_protocol_text(runtime: Runtime) -> None:
    advice = _advice(runtime.ncd["ncd-cvd-risk"], _patient(sbp=178.0))
    card = _card(advice, "km")
    assert card.detail is not None
    assert "ពិធីសារ" in card.detail
    assert "ចាប់ផ្តើមថ្នាំបញ្ចុះសម្ពាធឈាមភ្លាម" in card.detail
    assert any("ការមកពិនិត្យតាមដាន" in s.label for s in card.suggestions)


# --- urgency ------------------------------------------------------------------------


def _plain(indicator: str, tb: bool = False) -> Card:
    suggestions = []
    if tb:
        resource = {
            "resourceType": "ServiceRequest",
            "code": {"coding": [{"system": TB_REFERRAL.system, "code": TB_REFERRAL.code}]},
        }
        suggestions = [
            Suggestion(
                label="x",
                uuid="s",
                actions=[Action(type="create", description="x", resource=resource)],
            )
        ]
    return Card(
        uuid=f"{indicator}-{tb}",
        summary=indicator,
        indicator=indicator,  # type: ignore[arg-type]
        source=Source(label="x"),
        suggestions=suggestions,
    )


def test_cards_by_urgency() -> None:
    cards = [
        _plain("info"),
        _plain("critical"),
        _plain("warning"),
        _plain("critical", tb=True),
        _plain("warning", tb=True),
    ]
    order = [c.uuid for c in by_urgency(cards)]
    assert order == [
        "critical-True", "critical-False", "warning-True", "warning-False", "info-False"
    ]  # fmt: skip


def test_no_fasting_glucose_warning_when_an_hba1c_is_recorded(runtime: Runtime) -> None:
    """QA: the fasting-glucose warning sat on every diabetes card, even with an HbA1c."""
    import dataclasses

    advice = _advice(runtime.ncd["ncd-diabetes-risk"], _patient(sbp=125.0))
    with_a1c = dataclasses.replace(
        advice,
        features={**advice.features, "hba1c": 5.6},
        missing={"fasting_glucose": None, "hdl": None},
    )
    detail = _card(with_a1c).detail or ""
    assert "Not recorded, filled in by the model: HDL cholesterol." in detail
    without = dataclasses.replace(advice, missing={"fasting_glucose": None, "hba1c": None})
    detail = _card(without).detail or ""
    assert "Not recorded, filled in by the model: Fasting glucose, HbA1c." in detail


@pytest.mark.parametrize(("lang", "name"), [("en", "Cambodia"), ("km", "កម្ពុជា")])
def test_a_national_chart_is_named_by_its_country_not_its_code(
    runtime: Runtime, lang: str, name: str
) -> None:
    advice = _advice(runtime.ncd["ncd-cvd-risk"], _patient())
    assert advice.who is not None
    assert advice.who.country_code == "KHM"
    card = _card(advice, lang=lang)
    assert card.detail is not None
    assert f"{name}:" in card.detail or f"{name}៖" in card.detail or f", {name}" in card.detail
    assert "KHM" not in card.detail
