"""The security review's auth, audit and surface findings, against a real service.

Each test attacks the production-mode service of :mod:`tests.security.conftest` the way
the review did and fails on the code the review found.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.security.conftest import HOSPITAL_A, HOSPITAL_B, UNTENANTED, SecureService
from tests.serving.cds_fixtures import cds_request

CVD = "/cds-services/ncd-cvd-risk"
WHO = {"sex": "male", "age": 62, "smoking": True, "sbp": 165, "total_chol": 6.2,
       "diabetes": False, "model": "lab"}  # fmt: skip


def _metrics(secure: SecureService) -> str:
    auth = {"Authorization": f"Bearer {secure.metrics_token}"}
    response = secure.request("GET", "/metrics", headers=auth)
    assert response.status_code == 200, response.text
    row = secure.row(response)  # a scrape is audited like every answer
    assert (row["service_id"], row["outcome"], row["caller_iss"]) == (
        "metrics",
        "read",
        "tonle-metrics-token",
    )
    return response.text


def test_metrics_need_the_token_and_are_labelled_by_route(secure: SecureService) -> None:
    assert secure.request("GET", "/metrics").status_code == 401
    wrong = {"Authorization": f"Bearer {'0' * 64}"}
    assert secure.request("GET", "/metrics", headers=wrong).status_code == 401
    # An API key is a hospital's credential, not the scraper's.
    assert secure.request("GET", "/metrics", headers=secure.key("hospital-a")).status_code == 401
    # Health probes stay open.
    for probe in ("/readyz", "/healthz", "/livez"):
        assert secure.request("GET", probe).status_code == 200, probe
    before = _metrics(secure)
    paths = [f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}" for _ in range(100)]
    paths += [f"/cds-services/{uuid.uuid4().hex}" for _ in range(20)]
    for path in paths:
        secure.request("GET", path)
    after = _metrics(secure)
    for path in paths:
        assert path.rsplit("/", 1)[1] not in after
    # Bounded: 120 new paths add no series (the review saw 262 KB grow to 1 MB).
    assert len(after) < len(before) + 4096, (len(before), len(after))
    assert 'route="/cds-services/{service_id}"' in after


def test_who_cvd_is_audited(secure: SecureService) -> None:
    response = secure.request("POST", "/v1/who-cvd", json=WHO, headers=secure.key("hospital-a"))
    assert response.status_code == 200, response.text
    row = secure.row(response)
    assert (row["service_id"], row["outcome"], row["caller_tenant"]) == (
        "rest:who-cvd",
        "advice",
        "hospital-a",
    )


@contextmanager
def _audit_locked(secure: SecureService) -> Iterator[None]:
    """Hold SQLite's write lock (as another writer stuck on the disk would) meanwhile."""
    db = sqlite3.connect(secure.database, isolation_level=None, check_same_thread=False)
    db.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()


def test_who_cvd_is_not_answered_while_the_audit_store_is_down(secure: SecureService) -> None:
    key = secure.key("hospital-b")
    with _audit_locked(secure):
        who = secure.request("POST", "/v1/who-cvd", json=WHO, headers=key)
    assert (who.status_code, who.json()) == (503, {"error": "audit-unavailable"})
    assert "risk" not in who.text


def test_tenant_comes_from_configuration_only(secure: SecureService) -> None:
    # An issuer with no tenant configured cannot assert one.
    claimed = secure.token(CVD, UNTENANTED, tenant="hospital-a")
    response = secure.request("POST", CVD, json=cds_request(), headers=claimed)
    assert response.status_code == 401
    assert not secure.rows("caller_iss = ? AND caller_tenant IS NOT NULL", (UNTENANTED,))
    # Nor can a configured issuer name another hospital.
    other = secure.token(CVD, HOSPITAL_A, tenant="hospital-b")
    assert secure.request("POST", CVD, json=cds_request(), headers=other).status_code == 401
    plain = secure.request("POST", CVD, json=cds_request(), headers=secure.token(CVD, UNTENANTED))
    assert plain.status_code == 200
    assert secure.row(plain)["caller_tenant"] is None
    own = secure.request("POST", CVD, json=cds_request(), headers=secure.token(CVD, HOSPITAL_B))
    assert secure.row(own)["caller_tenant"] == "hospital-b"


def test_refused_calls_leave_no_durable_row_but_are_counted(secure: SecureService) -> None:
    rows = len(secure.rows())
    bad = {"Authorization": "Bearer a.b.c"}
    for _ in range(20):
        assert secure.request("POST", CVD, json=cds_request(), headers=bad).status_code == 401
        refused = secure.request("POST", "/v1/risk/cvd", json={}, headers={"X-API-Key": "x"})
        assert refused.status_code == 401
    assert len(secure.rows()) == rows
    counted = dict(
        re.findall(r"^tonle_refused_callers_total\{(.*)\} (\S+)$", _metrics(secure), re.M)
    )
    cds = 'reason="malformed-header",route="/cds-services/{service_id}"'
    rest = 'reason="api-key-unknown",route="/v1/risk/cvd"'
    assert float(counted[cds]) >= 20, counted
    assert float(counted[rest]) >= 20, counted


def test_unknown_service_ids_are_refused_before_they_are_looked_up(
    secure: SecureService,
) -> None:
    unknown = "/cds-services/no-such-service"
    assert secure.request("POST", unknown, json=cds_request()).status_code == 401
    assert secure.request("POST", unknown + "/feedback", json={}).status_code == 401
    known = secure.request("POST", unknown, json=cds_request(), headers=secure.token(unknown))
    assert known.status_code == 404
    assert secure.row(known)["service_id"] == "unknown-service"


def test_rest_accepts_the_apikey_authorization_scheme(secure: SecureService) -> None:
    header = {"Authorization": f"ApiKey {secure.api_keys['hospital-b']}"}
    response = secure.request("POST", "/v1/who-cvd", json=WHO, headers=header)
    assert response.status_code == 200, response.text
    assert secure.row(response)["caller_tenant"] == "hospital-b"


def _card(secure: SecureService, issuer: str) -> str:
    response = secure.request("POST", CVD, json=cds_request(), headers=secure.token(CVD, issuer))
    assert response.status_code == 200, response.text
    card: str = response.json()["cards"][0]["uuid"]
    return card


def _feedback(card: str) -> dict[str, Any]:
    return {
        "feedback": [
            {
                "card": card,
                "outcome": "overridden",
                "overrideReason": {"reason": {"code": "disagree", "system": "x"}},
                "outcomeTimestamp": "2026-12-01T10:00:00Z",
            }
        ]
    }


def _feedback_rows(secure: SecureService, card: str) -> list[Any]:
    with sqlite3.connect(secure.database) as db:
        return list(db.execute("SELECT caller_tenant FROM feedback WHERE card_uuid = ?", (card,)))


def _audited(secure: SecureService, response: Any) -> list[Any]:
    """The audit row (outcome, reason, tenant) of the call ``response`` answered."""
    query = "SELECT outcome, reason, caller_tenant FROM audit_events WHERE request_id = ?"
    with sqlite3.connect(secure.database) as db:
        return list(db.execute(query, (response.headers["x-request-id"],)))


def test_feedback_only_for_cards_shown_to_the_callers_hospital(secure: SecureService) -> None:
    path = f"{CVD}/feedback"
    card_a = _card(secure, HOSPITAL_A)
    other = secure.request(
        "POST", path, json=_feedback(card_a), headers=secure.token(path, HOSPITAL_B)
    )
    assert (other.status_code, other.json()["error"]) == (404, "unknown-card")
    # Feedback goes through the one pipeline: the refusal is audited under the caller.
    assert _audited(secure, other) == [("refused", "unknown-card", "hospital-b")]
    never = str(uuid.uuid4())
    made_up = secure.request("POST", path, json=_feedback(never), headers=secure.token(path))
    assert (made_up.status_code, made_up.json()) == (other.status_code, other.json())
    # A card from another service of the same hospital is not this service's.
    diabetes = "/cds-services/ncd-diabetes-risk/feedback"
    wrong_service = secure.request(
        "POST", diabetes, json=_feedback(card_a), headers=secure.token(diabetes)
    )
    assert wrong_service.status_code == 404
    assert _feedback_rows(secure, card_a) == []
    assert _feedback_rows(secure, never) == []
    own = secure.request("POST", path, json=_feedback(card_a), headers=secure.token(path))
    assert own.status_code == 200, own.text
    assert _feedback_rows(secure, card_a) == [("hospital-a",)]
    assert _audited(secure, own) == [("feedback", None, "hospital-a")]


def test_the_front_page_is_tonles_own(secure: SecureService) -> None:
    page = secure.request("GET", "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    for expected in ("Tonle", "/v1/openapi.json", "Ready"):
        assert expected in text, expected
    for outside in ("googletagmanager", "bentoml", "BentoML", "swagger", "http://", "https://"):
        assert outside not in text, outside
    # No script from anywhere; BentoML's own API description and Swagger page are gone.
    assert "<script" not in text
    assert secure.request("GET", "/docs.json").status_code == 404
    assert secure.request("GET", "/docs").status_code == 404
    assert secure.request("GET", "/v1/openapi.json").status_code == 200


def test_smart_launch_checks_the_fhir_server(secure: SecureService) -> None:
    launch = secure.request("GET", "/ui/launch?iss=https://evil.example/fhir&launch=x")
    assert launch.status_code == 403


def test_audit_rows_cannot_be_replaced_in_place(secure: SecureService) -> None:
    response = secure.request("POST", "/v1/who-cvd", json=WHO, headers=secure.key("hospital-a"))
    row = secure.row(response)
    forge = (
        "INSERT OR REPLACE INTO audit_events (id, request_id, service_id, card_ids, "
        "outcome, latency_ms, created) VALUES (?, ?, 'forged', '[]', 'advice', 0, ?)"
    )
    with (
        sqlite3.connect(secure.database) as db,
        pytest.raises(sqlite3.IntegrityError, match="append-only"),
    ):
        db.execute(forge, (row["id"], row["request_id"], row["created"]))
    assert secure.row(response)["service_id"] == "rest:who-cvd"
