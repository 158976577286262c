"""NcdPredictor against a real exported artifact (contract C3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models import registry
from models.ncd_predictor import NcdInputError, NcdPredictor, encode_rows, risk_band
from models.registry import ArtifactError
from tests.ncd_fixtures import fixture_rows, make_ncd_artifact


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[registry.StoredModel]:
    tmp = tmp_path_factory.mktemp("ncd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(tmp / "bentoml"))
        artifact = make_ncd_artifact(tmp)
        yield artifact


def test_artifact_follows_contract(stored: registry.StoredModel) -> None:
    meta = stored.metadata
    assert meta.task == "ncd-risk"
    assert meta.ncd.outcome == "cvd"
    assert meta.inputs == {"features": ["N", 7]}
    assert meta.ncd.parity is not None
    assert meta.ncd.parity.n_rows == 10_000
    assert meta.ncd.parity.max_abs_diff <= 1e-5
    assert (stored.card_dir / "model-card.md").is_file()


def test_predict_proba_tracks_the_generating_risk(stored: registry.StoredModel) -> None:
    predictor = NcdPredictor(stored)
    x, y = fixture_rows(4000, seed=7)
    p = predictor.predict_proba(x)
    assert p.shape == (4000,)
    assert np.all((p > 0) & (p < 1))
    # calibrated: mean predicted close to the observed event rate
    assert abs(float(p.mean()) - float(y.mean())) < 0.03
    # discriminates: events get higher risk on average
    assert p[y == 1].mean() > p[y == 0].mean() + 0.1


def test_predict_proba_handles_missing_optional_values(stored: registry.StoredModel) -> None:
    predictor = NcdPredictor(stored)
    x, _ = fixture_rows(5, seed=3)
    x[:, 4] = np.nan
    assert np.all(np.isfinite(predictor.predict_proba(x)))


def test_explain_is_consistent_with_the_model(stored: registry.StoredModel) -> None:
    predictor = NcdPredictor(stored)
    row = np.array([[1, 68, 1, 175, 6.5, 0, 24]], dtype=np.float32)
    risk, contributions = predictor.explain(row, top=3)
    assert risk == pytest.approx(float(predictor.predict_proba(row)[0]))
    assert len(contributions) == 3
    # each delta is exactly risk(row) - risk(row with that feature at its reference)
    for c in contributions:
        j = predictor.feature_names.index(c.feature)
        changed = row.copy()
        changed[0, j] = predictor.reference[j]
        expected = risk - float(predictor.predict_proba(changed)[0])
        assert c.delta_risk == pytest.approx(expected, abs=1e-6)
    magnitudes = [abs(c.delta_risk) for c in contributions]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert contributions[0].delta_risk > 0
    assert "raises the risk most" in contributions[0].text
    sbp = [c for c in contributions if c.feature == "sbp"]
    assert sbp, "a systolic BP of 175 should be among the top three factors"
    assert "systolic BP 175 mmHg raises the risk" in sbp[0].text


def test_explain_skips_reference_and_missing_values(stored: registry.StoredModel) -> None:
    predictor = NcdPredictor(stored)
    row = predictor.reference.copy()
    row[3] = 180.0
    row[6] = np.nan
    _, contributions = predictor.explain(row, top=5)
    assert [c.feature for c in contributions] == ["sbp"]


def test_explain_refuses_several_rows(stored: registry.StoredModel) -> None:
    predictor = NcdPredictor(stored)
    x, _ = fixture_rows(2)
    with pytest.raises(NcdInputError, match="exactly one row"):
        predictor.explain(x)


def test_wrong_width_is_refused(stored: registry.StoredModel) -> None:
    predictor = NcdPredictor(stored)
    with pytest.raises(NcdInputError) as info:
        predictor.predict_proba(np.zeros((2, 3), dtype=np.float32))
    assert info.value.field == "features"


def test_encode_rows(stored: registry.StoredModel) -> None:
    meta = stored.metadata
    x = encode_rows(
        meta, [{"sex": "male", "age": 60, "smoking": True, "sbp": 150, "total_chol": None}]
    )
    assert x.dtype == np.float32
    assert x[0, :4].tolist() == [1.0, 60.0, 1.0, 150.0]
    assert np.isnan(x[0, 4])
    assert np.isnan(x[0, 6])
    with pytest.raises(NcdInputError) as info:
        encode_rows(meta, [{"sex": "male", "age": 60, "smoking": False}])
    assert info.value.field == "sbp"
    with pytest.raises(NcdInputError, match="at least 40") as info:
        encode_rows(meta, [{"sex": "female", "age": 30, "smoking": False, "sbp": 120}])
    assert info.value.field == "age"
    with pytest.raises(NcdInputError, match="one of"):
        encode_rows(meta, [{"sex": "x", "age": 50, "smoking": False, "sbp": 120}])


def test_bands_use_the_rounded_chart_percent() -> None:
    assert risk_band(0.0449) == (0, "<5%")
    assert risk_band(0.045) == (1, "5-<10%")
    assert risk_band(0.0949) == (1, "5-<10%")
    assert risk_band(0.195) == (3, "20-<30%")
    assert risk_band(0.31) == (4, ">=30%")


def test_predictor_refuses_wrong_task(stored: registry.StoredModel, tmp_path: Path) -> None:
    bad = tmp_path / "copy"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(stored.onnx_path.read_bytes())
    meta = json.loads((stored.path / "metadata.json").read_text())
    fake = registry.StoredModel(
        metadata=stored.metadata.model_validate({**meta, "task": "test", "extra": {}}), path=bad
    )
    with pytest.raises(ArtifactError, match="ncd-risk"):
        NcdPredictor(fake)
    meta["extra"]["reference"] = {"sbp": 120}
    fake = registry.StoredModel(metadata=stored.metadata.model_validate(meta), path=bad)
    with pytest.raises(ArtifactError, match="reference"):
        NcdPredictor(fake)
