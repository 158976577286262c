"""Silent mode for ``cxr-triage``: the read's card is stored in the audit row, not sent."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from serving.imaging.state import ImagingState
from tests.serving.imaging import conftest
from tests.serving.imaging.conftest import AppFactory, LockableAudit
from tests.serving.imaging.results_fixtures import make_result, store_read
from tests.serving.imaging.test_cds import hook


def test_silent_cxr_triage_stores_its_card_and_sends_none(
    make_app: AppFactory, audit: LockableAudit, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = conftest.fake_runtime

    def silent_runtime(state: ImagingState, **auth: Any) -> SimpleNamespace:
        runtime = live(state, **auth)
        runtime.silent = lambda service_id: service_id == "cxr-triage"
        return runtime

    monkeypatch.setattr(conftest, "fake_runtime", silent_runtime)
    client, state = make_app()
    store_read(state, make_result(patient="P7", probs=(0.9, 0.8, 0.1, 0.1, 0.1)))
    response = client.post("/cds-services/cxr-triage", json=hook("P7"))
    assert response.status_code == 200
    assert response.json()["cards"] == []
    (row,) = [r for r in audit.rows() if r.service_id == "cxr-triage"]
    assert (row.outcome, row.mode) == ("advice", "silent")
    assert len(row.card_ids) == 1
