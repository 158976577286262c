"""CxrPredictor against a real exported artifact in a private model store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.cxr_net import CXR_LABELS, CxrNet
from models.cxr_predictor import CxrPredictionError, CxrPredictor, cam_peak, upsample_cam
from models.details import CxrCalibration, PlattParams
from models.registry import StoredModel
from tests.cxr_fixtures import make_cxr_artifact, tiny_images


@pytest.fixture
def stored(tmp_path: Path, model_store: Path) -> StoredModel:
    return make_cxr_artifact(tmp_path, size=64)


def test_predict_matches_pytorch(stored: StoredModel) -> None:
    predictor = CxrPredictor(stored)
    batch = tiny_images(3, 64, seed=5)
    probs, cams = predictor.predict(batch)
    torch.manual_seed(0)  # the fixture's seed: same weights
    net = CxrNet("resnet-small").eval()
    with torch.no_grad():
        logits, cam = net(torch.from_numpy(batch))
    np.testing.assert_allclose(probs, torch.sigmoid(logits).numpy(), atol=1e-5)
    np.testing.assert_allclose(cams, cam.numpy(), atol=1e-4)
    assert predictor.labels == list(CXR_LABELS)


def test_calibration_and_thresholds(stored: StoredModel) -> None:
    meta = stored.metadata
    calibration = CxrCalibration(params={"abnormal": PlattParams(scale=2.0, offset=-1.0)})
    details = meta.cxr.model_copy(update={"calibration": calibration})
    changed = StoredModel(metadata=meta.model_copy(update={"extra": details}), path=stored.path)
    predictor = CxrPredictor(changed)
    logits = np.array([[0.5, 0.5, 0.5, 0.5, 0.5]])
    probs = predictor.calibrate(logits)
    assert probs[0, 0] == pytest.approx(0.5)  # sigmoid(2 * 0.5 - 1)
    assert probs[0, 1] == pytest.approx(1 / (1 + np.exp(-0.5)))
    findings = predictor.findings(np.array([0.6, 0.4, 0.5, 0.1, 0.9]), overrides={"tb": 0.3})
    assert [f.positive for f in findings] == [True, True, True, False, True]
    assert findings[1].threshold.source == "site"
    assert findings[0].threshold.source == "model"
    assert "cxr-triage:0.0.1" in findings[0].threshold.chosen_on
    with pytest.raises(CxrPredictionError, match="unknown label"):
        predictor.thresholds({"pneumothorax": 0.5})
    with pytest.raises(CxrPredictionError, match="outside"):
        predictor.thresholds({"tb": 1.5})


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (np.zeros((1, 1, 32, 32), np.float32), "shape"),
        (np.zeros((1, 64, 64), np.float32), "shape"),
        (np.zeros((1, 1, 64, 64), np.float64), "dtype"),
        (np.full((1, 1, 64, 64), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_batches_are_refused(stored: StoredModel, batch: np.ndarray, match: str) -> None:
    with pytest.raises(CxrPredictionError, match=match):
        CxrPredictor(stored).predict(batch)


def test_not_a_cxr_model_is_refused(stored: StoredModel) -> None:
    meta = stored.metadata.model_copy(update={"task": "test"})
    with pytest.raises(CxrPredictionError, match="cxr-triage"):
        CxrPredictor(StoredModel(metadata=meta, path=stored.path))


def test_cam_peak_and_upsample() -> None:
    cam = np.zeros((4, 4), np.float32)
    cam[1, 2] = 5.0
    up = upsample_cam(cam, 64, 64)
    assert up.shape == (64, 64)
    row, col = cam_peak(cam, 64, 64)
    assert 16 <= row < 32
    assert 32 <= col < 48
