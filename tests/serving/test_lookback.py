"""Serving reads nothing older than the model was trained on: a ``max_data_age_days``
longer than the model's recorded training look-back stops the service at start-up."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from models import registry
from models.ncd_lookback import LOOKBACK_DAYS
from models.registry import StoredModel
from serving.config import ServingConfig
from tests.serving.cds_fixtures import model_store_at, runtime_for, shared_store, write_config


def _recording(monkeypatch: pytest.MonkeyPatch, lookback_days: int | None) -> None:
    """The fixture models, as if trained with ``lookback_days``."""
    verify = registry.verify

    def verified(name: str, version: str) -> StoredModel:
        stored = verify(name, version)
        meta = stored.metadata.model_copy(update={"lookback_days": lookback_days})
        return StoredModel(metadata=meta, path=stored.path)

    monkeypatch.setattr(registry, "verify", verified)


def _config(tmp: Path, max_age: int) -> Path:
    (tmp / "site").mkdir()
    return write_config(tmp / "site", max_data_age_days=max_age)


def test_default_max_age_is_the_training_lookback() -> None:
    assert ServingConfig().max_data_age_days == LOOKBACK_DAYS == 365


@pytest.mark.parametrize(("lookback", "max_age"), [(365, 365), (730, 365), (180, 90)])
def test_starts_when_no_older_than_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lookback: int, max_age: int
) -> None:
    _recording(monkeypatch, lookback)
    config = _config(tmp_path, max_age)
    with runtime_for(shared_store(), tmp_path, serving_config=config) as rt:
        assert rt.ready
        assert rt.config.max_data_age_days == max_age


@pytest.mark.parametrize(("lookback", "max_age"), [(365, 366), (180, 365)])
def test_refuses_to_start_when_older_than_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lookback: int, max_age: int
) -> None:
    _recording(monkeypatch, lookback)
    config = _config(tmp_path, max_age)
    with (
        pytest.raises(ValueError, match=f"max_data_age_days = {max_age}") as refused,
        runtime_for(shared_store(), tmp_path, serving_config=config),
    ):
        pass
    assert f"at most {lookback} days old" in str(refused.value)
    assert f"set max_data_age_days to {lookback} or less" in str(refused.value)


def test_an_artifact_without_a_lookback_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Artifacts from before the look-back was recorded (like these fixtures) stay
    loadable: unknown, so the check cannot be made, and the log says so."""
    with model_store_at(shared_store()):
        assert registry.verify("cvd-risk", "1.0.0").metadata.lookback_days is None
    with (
        caplog.at_level(logging.WARNING, logger="serving.runtime"),
        runtime_for(shared_store(), tmp_path) as rt,
    ):
        assert rt.ready
    assert "does not record its training look-back" in caplog.text
    assert "cvd-risk:1.0.0" in caplog.text
