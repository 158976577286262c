"""The metadata-tamper finding, against the production-mode service: a stored model's
identity (``metadata.sha256``) is one digest over its metadata and model card, recorded
at save time in the metadata and in BentoML's ``model.yaml``. Editing ``metadata.json``
(operating thresholds set to 1.0: nothing would ever be flagged) makes the service
refuse to load, so it never becomes ready; the same store as saved is served."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.serving.imaging.cxr_fixtures import served_store
from tests.serving.service_process import TonleProcess

REFUSED = "the metadata or the card was modified and will not be loaded"


@pytest.mark.slow
def test_a_model_with_edited_metadata_is_not_served(tmp_path: Path) -> None:
    home, cxr, config = served_store(tmp_path)
    env = {"BENTOML_HOME": str(home), "TONLE_SERVING_CONFIG": str(config)}
    service = TonleProcess(tmp_path, f"sqlite:///{tmp_path / 'audit.db'}", env=env)
    metadata = cxr.path / "metadata.json"
    saved = metadata.read_text(encoding="utf-8")
    edited = json.loads(saved)
    assert edited["operating_points"]
    for point in edited["operating_points"]:
        point["threshold"] = 1.0
    metadata.write_text(json.dumps(edited), encoding="utf-8")

    try:
        with pytest.raises(RuntimeError, match="did not become ready"):
            service.start(ready_timeout_s=60)
        assert REFUSED in service.log_tail(100_000)

        metadata.write_text(saved, encoding="utf-8")  # the artifact as it was saved
        service.start()
        page = f"{service.url}/ui/models/cxr-triage/{cxr.metadata.version}"
        card = httpx.get(page, timeout=30)
        assert card.status_code == 200
        assert cxr.metadata.sha256 in card.text
    finally:
        service.stop()
