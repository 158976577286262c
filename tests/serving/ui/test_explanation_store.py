"""NCD explanations live in the service database: a card's link opens on another app
instance (worker, replica) and after a restart, on SQLite and PostgreSQL; expired ones
are refused and purged; the page link is signed; nothing identifying reaches the logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette

from serving.audit import AuditRecord, AuditStore
from serving.audit.records import ExplanationRecord
from serving.runtime import Runtime
from serving.settings import Settings
from serving.ui import links
from tests.serving.cds_fixtures import cds_request, prefetch
from tests.serving.db_fixtures import postgres_database
from tests.serving.ui.ui_fixtures import cvd_app, request

PATIENT = "PHI-PATIENT-7731"
CDS = "/cds-services/ncd-cvd-risk"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    with postgres_database("tonle_ui") as url:
        yield url


def _card(app: Starlette) -> dict[str, Any]:
    body = cds_request(prefetch(), context={"userId": "Practitioner/example", "patientId": PATIENT})
    response = request(app, "POST", CDS, json=body)
    assert response.status_code == 200, response.text
    card: dict[str, Any] = response.json()["cards"][0]
    return card


def _ml_risk(html: str) -> str:
    found = re.search(r'id="who-risk">([^<]+)<', html)  # the leading estimate
    assert found is not None, html[:500]
    return found.group(1)


def test_link_opens_on_another_instance_and_after_a_restart(
    ui_store_home: Path, tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with cvd_app(ui_store_home, tmp_path / "a", database_url=db_url) as first:
        card = _card(first)
        link = card["links"][0]["url"].removeprefix("http://testserver")
        shown = request(first, "GET", link)
        assert shown.status_code == 200
        with cvd_app(ui_store_home, tmp_path / "b", database_url=db_url) as second:
            # Another worker: no memory of the card, same database (and link key).
            elsewhere = request(second, "GET", link)
            assert elsewhere.status_code == 200, elsewhere.text
            assert _ml_risk(elsewhere.text) == _ml_risk(shown.text)
            assert "If systolic BP were 130 mmHg" in elsewhere.text  # what-ifs on read
    with cvd_app(ui_store_home, tmp_path / "c", database_url=db_url) as restarted:
        again = request(restarted, "GET", link)
        assert again.status_code == 200
        assert _ml_risk(again.text) == _ml_risk(shown.text)
        store = restarted.state.runtime.audit
        stored = store.explanation(card["uuid"])
        assert stored is not None
        assert stored.expires - stored.created == timedelta(days=30)
        assert store.request_for_card(card["uuid"]) is not None  # same commit as its row
    # Nothing identifying in the stored page or in the service's log lines (the test's
    # own HTTP client logs the URLs it requests; it is not the service).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    birth = prefetch()["patient"]["birthDate"]
    for text in (stored.content, logged):
        assert PATIENT not in text
        assert birth not in text
    assert link.split("?")[1] not in logged  # nor the capability itself


def test_expired_explanations_are_refused_then_purged(
    ui_store_home: Path, tmp_path: Path, db_url: str
) -> None:
    with cvd_app(
        ui_store_home, tmp_path / "a", database_url=db_url, explanation_retention_days=2
    ) as app:
        runtime: Runtime = app.state.runtime
        store = runtime.audit
        assert isinstance(store, AuditStore)
        card = _card(app)
        signer = links.signer(runtime)
        assert signer.ttl_s == 2 * 86400
        # A row past its retention but not purged yet (the purge runs once a minute).
        old = datetime.now(UTC) - timedelta(days=3)
        store.record(
            AuditRecord(
                request_id="r-old",
                service_id="ncd-cvd-risk",
                card_ids=["old-card-0001"],
                outcome="advice",
                latency_ms=1.0,
                created=old,
                explanation=ExplanationRecord(
                    card_uuid="old-card-0001",
                    service_id="ncd-cvd-risk",
                    created=old,
                    expires=old + timedelta(days=2),
                    content=store.explanation(card["uuid"]).content,  # type: ignore[union-attr]
                ),
            )
        )
        expired_row = request(app, "GET", signer.sign("/ui/explain/old-card-0001"))
        assert expired_row.status_code == 404
        assert "expired" in expired_row.text
        assert store.prune_explanations() == 1
        assert store.explanation("old-card-0001") is None
        assert store.explanation(card["uuid"]) is not None
        # Two days on, the card's row is purged too, and its link has expired.
        assert store.prune_explanations(datetime.now(UTC) + timedelta(days=2, seconds=1)) == 1
        assert request(app, "GET", signer.sign(f"/ui/explain/{card['uuid']}")).status_code == 404


def test_page_links_are_signed_and_refusals_look_alike(ui_store_home: Path, tmp_path: Path) -> None:
    with cvd_app(ui_store_home, tmp_path, database_url=f"sqlite:///{tmp_path / 'a.db'}") as app:
        runtime = app.state.runtime
        card = _card(app)
        page = f"/ui/explain/{card['uuid']}"
        link = card["links"][0]["url"].removeprefix("http://testserver")
        assert link.startswith(f"{page}?exp=")
        signer = links.signer(runtime)
        stale = signer.sign(page, now=datetime.now(UTC).timestamp() - 31 * 86400)
        refusals = {
            "unsigned": request(app, "GET", page),
            "tampered": request(app, "GET", link.replace("sig=", "sig=0")[:-1]),
            "other-card": request(app, "GET", link.replace(card["uuid"], "0" * 32)),
            "expired": request(app, "GET", stale),
        }
        assert {k: r.status_code for k, r in refusals.items()} == {
            "unsigned": 403,
            "tampered": 403,
            "other-card": 403,
            "expired": 410,
        }
        # Tampered and expired links to one page get one body (it names only the path).
        same_page = [refusals[k].text for k in ("unsigned", "tampered", "expired")]
        assert len(set(same_page)) == 1
        assert refusals["other-card"].text == same_page[0].replace(card["uuid"], "0" * 32)
        assert "not valid or has expired" in refusals["expired"].text
        assert request(app, "GET", link).status_code == 200


def test_configured_link_secret_is_used(ui_store_home: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with cvd_app(ui_store_home, tmp_path, database_url=url, link_secret="s" * 40) as app:
        signer = links.signer(app.state.runtime)
    configured = links.LinkSigner(b"s" * 40, timedelta(days=30))
    assert signer.sign("/x", now=0) == configured.sign("/x", now=0)
    with pytest.raises(ValidationError, match="32 or more"):
        Settings(link_secret=SecretStr("too-short"))
