"""The out-of-distribution gate: fitted in feature space, inside the ONNX graph, applied
by the predictor before any score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.cxr_export import check_parity, cxr_metadata, export_onnx
from models.cxr_net import CXR_LABELS, CxrNet
from models.cxr_ood import (
    OodScored,
    cross_fitted_distances,
    embeddings,
    fit_gate,
    squared_distances,
)
from models.cxr_predictor import OOD_OUTPUT, CxrPredictor, refused
from models.metadata import ImageSpec, OperatingPoint
from models.registry import save
from tests.cxr_fixtures import tiny_images


def test_gate_threshold_is_the_held_out_quantile() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (2000, 8))
    held_out = rng.normal(0, 1, (1000, 8))
    gate = fit_gate(train, held_out, quantile=0.99)
    d2 = squared_distances(held_out, np.asarray(gate.mean), np.asarray(gate.precision))
    assert np.mean(d2 > gate.threshold) <= 0.01
    # At least the empirical quantile, and near chi-square(8)'s 99th percentile (20.1).
    assert gate.threshold >= np.quantile(d2, 0.99)
    assert 18 < gate.threshold < 30
    fresh = rng.normal(0, 1, (2000, 8))
    fresh_d2 = squared_distances(fresh, np.asarray(gate.mean), np.asarray(gate.precision))
    assert np.mean(fresh_d2 > gate.threshold) < 0.02  # images not used to set it
    shifted = fresh + 3.0  # far from the training distribution
    far = squared_distances(shifted, np.asarray(gate.mean), np.asarray(gate.precision))
    assert np.mean(far > gate.threshold) > 0.99
    with pytest.raises(ValueError, match=">= 2 training"):
        fit_gate(train[:1], held_out)


def test_training_images_cross_fitted_set_the_threshold_too() -> None:
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(3)
    train, held_out = rng.standard_t(5, (120, 16)), rng.standard_t(5, (30, 16))
    oof = cross_fitted_distances(train, 5)
    # Each is the distance to a gate fitted on the OTHER four folds.
    fold = LedoitWolf().fit(train[np.arange(120) % 5 != 2])
    d2 = squared_distances(train[2::5], np.asarray(fold.location_), np.asarray(fold.precision_))
    np.testing.assert_allclose(oof[2::5], d2)
    whole = LedoitWolf().fit(train)
    in_sample = squared_distances(train, np.asarray(whole.location_), np.asarray(whole.precision_))
    assert np.median(oof) > np.median(in_sample)  # out of sample: farther

    gate = fit_gate(train, held_out, quantile=0.999)
    assert (gate.folds, gate.n_fit, gate.n_threshold) == (5, 120, 30)
    assert "120 training images, each to a gate fitted without it" in str(
        gate.describe()["threshold_on"]
    )
    pooled = np.concatenate(
        [squared_distances(held_out, np.asarray(gate.mean), np.asarray(gate.precision)), oof]
    )
    assert gate.threshold >= pooled.max()  # 0.999 of 150: the largest, at least
    alone = fit_gate(train, held_out, quantile=0.999, folds=0)
    assert alone.folds == 0
    assert "cross-fitting" not in str(alone.describe()["threshold_on"])
    assert fit_gate(train[:9], held_out).folds == 0  # too few for 5 folds of >= 2


def test_refused_fails_closed() -> None:
    assert refused(np.array([0.2, 1.0, 1.01, np.nan, np.inf])).tolist() == [
        False, False, True, True, True,
    ]  # fmt: skip


def test_gate_is_in_the_graph_and_the_predictor_applies_it(
    tmp_path: Path, model_store: Path
) -> None:
    torch.manual_seed(0)
    size = 64
    net = CxrNet("resnet-small").eval()
    ind = tiny_images(60, size, seed=1)
    gate = fit_gate(embeddings(net, ind[:40]), embeddings(net, ind[40:]), quantile=0.99)
    onnx_path = export_onnx(
        OodScored(net, gate), tmp_path / "m.onnx", size, ("logits", "cam", OOD_OUTPUT)
    )
    check_parity(net, onnx_path, ind[:4])  # logits and maps unchanged by the wrapper
    meta = cxr_metadata(
        name="cxr-ood-test",
        version="0.0.1",
        image=ImageSpec(size=size, normalisation="test"),
        cam_shape=(4, 4),
        operating_points=[
            OperatingPoint(label=label, threshold=0.5, chosen_on="test") for label in CXR_LABELS
        ],
        calibration={label: {"scale": 1.0, "offset": 0.0} for label in CXR_LABELS},
        description="test",
    )
    predictor = CxrPredictor(save(onnx_path, meta))
    assert predictor.has_ood_gate
    noise = np.random.default_rng(2).random((3, 1, size, size)).astype(np.float32)
    batch = np.concatenate([tiny_images(3, size, seed=9), noise, 1.0 - ind[:2]])
    logits, _, score = predictor.raw_with_ood(batch)
    expected = (
        squared_distances(embeddings(net, batch), np.asarray(gate.mean), np.asarray(gate.precision))
        / gate.threshold
    )
    np.testing.assert_allclose(score, expected, rtol=1e-3)  # the graph computes the gate
    out = refused(score)
    assert not out[:3].any()  # fresh in-distribution images pass
    assert out[3:6].all()  # noise is refused
    probs, maps = predictor.predict(batch)
    assert np.isnan(probs[out]).all()
    assert np.isnan(maps[out]).all()  # refused: no score, no map
    assert np.isfinite(probs[~out]).all()
    np.testing.assert_allclose(probs[~out], predictor.calibrate(logits)[~out])
    raw_logits, _ = predictor.raw(batch)  # evaluation reads every image, ungated
    assert np.isfinite(raw_logits).all()
