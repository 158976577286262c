"""The ``cxr-triage`` CDS Hooks service: latest stored read per patient, or no cards."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from serving.cds_models import CdsResponse
from serving.imaging.card import cxr_card
from serving.imaging.cds import SERVICE
from serving.ui.links import LinkSigner
from tests.serving.imaging.conftest import AppFactory, LockableAudit
from tests.serving.imaging.results_fixtures import make_result, store_read

_SIGNER = LinkSigner(b"k" * 32, timedelta(days=1))


def hook(patient: str) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": patient},
        "prefetch": {},
    }


def test_latest_recent_read_becomes_one_card(make_app: AppFactory, audit: LockableAudit) -> None:
    client, state = make_app()
    old = make_result(patient="P7", created=datetime.now(UTC) - timedelta(days=400))
    new = make_result(patient="P7", probs=(0.9, 0.2, 0.7, 0.1, 0.1))
    for result in (old, new):
        store_read(state, result)
    response = client.post("/cds-services/cxr-triage", json=hook("P7"))
    assert response.status_code == 200
    answer = CdsResponse.model_validate(response.json())
    assert len(answer.cards) == 1
    card = answer.cards[0]
    assert card.indicator == "warning"
    assert "nodule" in card.summary
    assert "abnormality" in card.summary
    assert "tuberculosis" not in card.summary  # 0.2 < 0.5
    assert len(card.summary) < 140
    # Browser links are signed capability links; the heatmap one opens as is.
    heatmap = card.links[0].url.removeprefix("https://tonle.test")
    assert heatmap.startswith(f"{new.heatmap_url}?exp=")
    assert client.get(heatmap).headers["content-type"] == "image/png"
    assert card.links[1].url.startswith(f"https://tonle.test/ui/explain/cxr/{new.id}?exp=")
    assert card.links[1].url.endswith("&lang=en")
    # Every card link opens in a browser without credentials: all are signed links
    # (the API-key FHIR DiagnosticReport route would answer 401 there).
    assert len(card.links) == 2
    assert all("&sig=" in link.url for link in card.links)
    assert "**nodule 70 (threshold 50)** (at or above threshold)" in (card.detail or "")
    assert "unverified" in (card.detail or "")
    (row,) = [r for r in audit.rows() if r.service_id == "cxr-triage"]
    assert row.outcome == "advice"
    assert row.card_ids == [card.uuid]
    assert row.hook_instance is not None


def test_no_recent_read_gives_no_cards(make_app: AppFactory, audit: LockableAudit) -> None:
    client, state = make_app()
    store_read(state, make_result(patient="P8", created=datetime.now(UTC) - timedelta(days=400)))
    for patient in ("P8", "P9"):
        response = client.post("/cds-services/cxr-triage", json=hook(patient))
        assert response.status_code == 200
        assert response.json() == {"cards": [], "systemActions": []}
    hooks = [r.outcome for r in audit.rows() if r.service_id == "cxr-triage"]
    assert hooks == ["no-advice", "no-advice"]


def test_bad_hook_requests_are_4xx_with_an_audit_row(
    make_app: AppFactory, audit: LockableAudit
) -> None:
    """The hook request is parsed by the same strict reader as every JSON body."""
    client, _ = make_app()
    wrong = hook("P1") | {"hook": "order-sign"}
    json_type = {"content-type": "application/json"}
    url = "/cds-services/cxr-triage"
    calls = [
        (client.post(url, content=b"{", headers=json_type), 400, "invalid-json"),
        (client.post(url, json=wrong), 400, "wrong-hook"),
        (client.post(url, json=hook("../etc")), 400, "invalid-field"),
        (client.post(url, content=b" " * (1 << 20 | 1), headers=json_type), 413, "too-large"),
        (client.post(url, content=b"{}"), 415, "unsupported-media-type"),
        (client.post(url, content=b'{"hook": 1, "hook": 2}', headers=json_type), 400,
         "duplicate-key"),
    ]  # fmt: skip
    assert [r.status_code for r, _, _ in calls] == [status for _, status, _ in calls]
    assert [(row.outcome, row.reason) for row in audit.rows()] == [
        ("refused", reason) for _, _, reason in calls
    ]
    assert [r.headers["x-request-id"] for r, _, _ in calls] == [
        row.request_id for row in audit.rows()
    ]
    assert audit.rows()[1].hook_instance == wrong["hookInstance"]


def test_unauthenticated_hook_calls_are_refused_without_a_durable_row(
    make_app: AppFactory, audit: LockableAudit
) -> None:
    """Refused callers are counted (metrics), not given an audit row: anyone can send
    them, and each row costs a durable commit."""
    client, _ = make_app(dev=False)
    refused = client.post("/cds-services/cxr-triage", json=hook("P1"))
    assert (refused.status_code, refused.content) == (401, b'{"error":"unauthorized"}')
    assert audit.rows() == []


def test_refusal_without_its_audit_row_is_503(make_app: AppFactory, audit: LockableAudit) -> None:
    client, _ = make_app()
    audit.fail = True
    response = client.post("/cds-services/cxr-triage", content=b"{")
    assert response.status_code == 503
    assert response.json() == {"error": "audit-unavailable"}


def test_card_without_flags_is_info() -> None:
    card = cxr_card(
        make_result(probs=(0.1, 0.1, 0.1, 0.1, 0.1)), public_url="https://x", signer=_SIGNER
    )
    assert card.indicator == "info"
    assert "no abnormality" in card.summary
    assert SERVICE.hook == "patient-view"
    assert SERVICE.id == "cxr-triage"


def test_cards_speak_khmer_when_asked(make_app: AppFactory) -> None:
    client, state = make_app()
    store_read(state, make_result(patient="P10"))
    english = client.post("/cds-services/cxr-triage", json=hook("P10")).json()["cards"][0]
    khmer = client.post(
        "/cds-services/cxr-triage", json=hook("P10"), headers={"accept-language": "km-KH"}
    ).json()["cards"][0]
    assert english["summary"] != khmer["summary"]
    assert any("\u1780" <= ch <= "\u17ff" for ch in khmer["summary"])
    assert khmer["links"][1]["url"].endswith("&lang=km")
    # Both say the read is AI generated and unverified, in their own language.
    from serving.i18n import t
    from serving.imaging.results import ADVISORY

    assert t("advisory.cxr", "en") == ADVISORY
    assert ADVISORY in english["detail"]
    assert t("advisory.cxr", "km") in khmer["detail"]


def test_card_without_its_audit_row_is_503(make_app: AppFactory, audit: LockableAudit) -> None:
    """A stored read exists, but the card's audit row cannot be committed: no card."""
    client, state = make_app()
    store_read(state, make_result(patient="P11"))
    before = audit.count()
    audit.fail = True
    response = client.post("/cds-services/cxr-triage", json=hook("P11"))
    assert response.status_code == 503
    assert response.json() == {"error": "audit-unavailable"}
    audit.fail = False
    assert audit.count() == before
    assert len(client.post("/cds-services/cxr-triage", json=hook("P11")).json()["cards"]) == 1
