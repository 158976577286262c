"""The imaging part of the whole app: Runtime.load + create_app with an imaging section."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from models.registry import StoredModel
from serving.app import create_app
from serving.runtime import Runtime
from serving.settings import Settings
from tests.serving.imaging.conftest import Client
from tests.serving.imaging.cxr_fixtures import dicom_bytes


@pytest.fixture
def runtime(tiny_cxr: StoredModel, tmp_path: Path) -> Runtime:
    config = {
        "models": {"cxr-triage": tiny_cxr.metadata.version},
        "imaging": {"model": "cxr-triage"},
    }
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    settings = Settings(
        serving_config=tmp_path / "serving.yaml",
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",  # type: ignore[arg-type]
        dev=True,
        public_url="http://testserver",
    )
    return Runtime.load(settings)


def test_configured_imaging_is_served_discovered_and_audited(runtime: Runtime) -> None:
    app = create_app(runtime.settings)
    app.state.runtime = runtime
    client = Client(app)
    try:
        services = client.get("/cds-services").json()["services"]
        assert "cxr-triage" in [s["id"] for s in services]
        response = client.post(
            "/v1/imaging/cxr",
            content=dicom_bytes(patient_id="E2E-1"),
            headers={"content-type": "application/dicom"},
        )
        assert response.status_code == 200, response.text
        rows = runtime.audit.rows(request_id=response.headers["x-request-id"])  # type: ignore[union-attr]
        assert len(rows) == 1
        assert rows[0].outcome == "advice"
        assert rows[0].model_sha256 == runtime.models["cxr-triage"].metadata.sha256
        hook = {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": "E2E-1"},
        }
        cards = client.post("/cds-services/cxr-triage", json=hook).json()["cards"]
        assert len(cards) == 1
        # The same heatmap, each link signed when it was made.
        heatmap = response.json()["heatmap_url"].split("?")[0]
        assert cards[0]["links"][0]["url"].split("?")[0] == heatmap
        feedback = {
            "feedback": [
                {
                    "card": cards[0]["uuid"],
                    "outcome": "overridden",
                    "overrideReason": {"reason": {"code": "disagree", "system": "urn:x"}},
                    "outcomeTimestamp": "2026-11-25T10:00:00Z",
                }
            ]
        }
        answer = client.post("/cds-services/cxr-triage/feedback", json=feedback)
        assert answer.status_code == 200, answer.text
        stored = runtime.audit.feedback(card_uuid=cards[0]["uuid"])  # type: ignore[union-attr]
        assert [f.outcome for f in stored] == ["overridden"]
    finally:
        client.close()


def test_imaging_model_must_be_pinned(tmp_path: Path, model_store: Path) -> None:
    config = {"imaging": {"model": "cxr-triage"}}
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    settings = Settings(
        serving_config=tmp_path / "serving.yaml",
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",  # type: ignore[arg-type]
        dev=True,
    )
    with pytest.raises(ValueError, match="not pinned"):
        Runtime.load(settings)
