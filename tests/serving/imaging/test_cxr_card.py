"""The cxr-triage card: study date, 0-100 scores beside thresholds, TB referral (WHO:
a rapid diagnostic test, CAD for people aged 15 and over), accept/override, urgency."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from serving.cards import TB_REFERRAL, by_urgency
from serving.cds_models import Card, Source
from serving.imaging.card import cxr_card, patient_age, score_text
from serving.imaging.results import StudyRef
from serving.ui.links import LinkSigner
from tests.serving.imaging.conftest import AppFactory
from tests.serving.imaging.results_fixtures import make_result, store_read

_SIGNER = LinkSigner(b"k" * 32, timedelta(days=1))
# abnormal, tb, nodule, consolidation, effusion
TB_READ = (0.97, 0.89, 0.10, 0.0004, 0.30)


def _card(age: float | None, lang: str = "en", probs: tuple[float, ...] = TB_READ) -> Card:
    result = make_result(probs=probs)
    result = result.model_copy(update={"study": StudyRef(study_uid="1.2", study_date="20261130")})
    return cxr_card(
        result, public_url="https://x", signer=_SIGNER, lang=lang, patient_id="P1", age=age
    )


def test_tb_read_in_an_adult_proposes_a_rapid_test_referral() -> None:
    """QA: a TB read of 0.97 for a patient with three weeks of cough sat third, with no
    next step and no accept/override."""
    card = _card(age=42.0)
    assert card.indicator == "critical"
    assert card.summary == (
        "Chest X-ray 30 Nov 2026: TB-consistent, score 89/100 (threshold 50). Test for TB"
    )
    assert card.detail is not None
    assert "Study date: 30 Nov 2026." in card.detail
    assert "**tuberculosis 89 (threshold 50)** (at or above threshold)" in card.detail
    assert "consolidation <1 (threshold 50)" in card.detail
    assert "Module 2: screening, 2021" in card.detail
    assert len(card.suggestions) == 1
    suggestion = card.suggestions[0]
    assert suggestion.isRecommended
    resource = suggestion.actions[0].resource
    assert resource is not None
    request = ServiceRequest.model_validate(resource)
    assert (request.status, request.intent) == ("draft", "proposal")
    assert resource["code"]["coding"] == [TB_REFERRAL.model_dump(exclude_none=True)]
    assert resource["subject"] == {"reference": "Patient/P1"}
    assert {r.code for r in card.overrideReasons} >= {"disagree", "already-managed"}
    assert card.selectionBehavior == "at-most-one"


@pytest.mark.parametrize(
    ("age", "said"),
    [
        (12.0, "only for people aged 15 and over: no referral is proposed"),
        (None, "The patient's age is not known"),
    ],
)
def test_no_referral_under_15_or_without_an_age(age: float | None, said: str) -> None:
    card = _card(age=age)
    assert card.suggestions == []
    assert card.detail is not None
    assert said in card.detail
    assert card.overrideReasons  # still accept/override


def test_age_15_is_referred() -> None:
    assert _card(age=15.0).suggestions


def test_other_findings_are_a_warning_without_referral() -> None:
    card = _card(age=40.0, probs=(0.9, 0.2, 0.7, 0.1, 0.1))
    assert card.indicator == "warning"
    assert card.suggestions == []
    assert (
        card.summary
        == "Chest X-ray 30 Nov 2026: possible abnormality, nodule. Please review the image"
    )


def test_khmer_tb_card() -> None:
    card = _card(age=42.0, lang="km")
    assert card.summary.startswith("កាំរស្មីអ៊ិចទ្រូង 30 វិច្ឆិកា 2026")
    assert "ធ្វើតេស្តរបេង" in card.summary
    assert card.suggestions[0].label == "បញ្ជូនទៅធ្វើតេស្តរហ័សដែល WHO ណែនាំសម្រាប់ជំងឺរបេង"


@pytest.mark.parametrize(
    ("probability", "text"),
    [(0.99999999995, ">99"), (0.995, ">99"), (0.5, "50"), (0.004, "<1"), (0.0, "0"), (1.0, "100")],
)
def test_scores_on_a_0_to_100_scale(probability: float, text: str) -> None:
    assert score_text(probability) == text


@pytest.mark.parametrize(
    ("patient", "age"),
    [
        ({"resourceType": "Patient", "birthDate": "2011-06-15"}, 15.0),
        ({"resourceType": "Patient", "birthDate": "2011-06-16"}, 14.0),
        ({"resourceType": "Patient", "birthDate": "2031-01-01"}, None),
        ({"resourceType": "Patient", "birthDate": "2011"}, None),
        ({"resourceType": "Patient"}, None),
        (None, None),
    ],
)
def test_patient_age(patient: Any, age: float | None) -> None:
    assert patient_age(patient, date(2026, 6, 15)) == age


def test_tb_read_comes_before_other_critical_cards() -> None:
    ncd = Card(uuid="ncd", summary="x", indicator="critical", source=Source(label="x"))
    info = Card(uuid="info", summary="x", indicator="info", source=Source(label="x"))
    tb = _card(age=42.0)
    assert [c.uuid for c in by_urgency([info, ncd, tb])] == [tb.uuid, "ncd", "info"]


def _hook(patient: str, birth: str | None) -> dict[str, Any]:
    prefetch = {"patient": {"resourceType": "Patient", "id": patient, "birthDate": birth}}
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": patient},
        "prefetch": prefetch if birth else {},
    }


def test_route_reads_the_age_from_prefetch(make_app: AppFactory) -> None:
    client, state = make_app()
    store_read(state, make_result(patient="P20", probs=TB_READ))
    born = (datetime.now(UTC) - timedelta(days=365 * 40)).date().isoformat()
    adult = client.post("/cds-services/cxr-triage", json=_hook("P20", born)).json()["cards"][0]
    assert adult["indicator"] == "critical"
    assert adult["suggestions"][0]["actions"][0]["resource"]["subject"] == {
        "reference": "Patient/P20"
    }
    unknown = client.post("/cds-services/cxr-triage", json=_hook("P20", None)).json()["cards"][0]
    assert "suggestions" not in unknown or unknown["suggestions"] == []
    discovery = client.get("/cds-services").json()["services"]
    cxr = next(s for s in discovery if s["id"] == "cxr-triage")
    assert cxr["prefetch"] == {"patient": "Patient/{{context.patientId}}"}
