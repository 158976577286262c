"""The chest X-ray drift reference training records (``CxrDetails.training_distribution``):
image statistics over the training split, calibrated scores over validation, in the
format serving reads (:class:`serving.monitor.drift.FeatureBins`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

from models.cxr_drift import IMAGE_STATISTICS, image_statistics, score_name
from models.cxr_net import CXR_LABELS
from models.cxr_preprocess import DecodedImage, decode_dicom, decode_png, to_model_input
from models.details import FeatureBins
from serving.monitor.drift import bin_of, psi
from training.cxr_data import CxrData, load_cxr_data
from training.cxr_evaluate import drift_text
from training.cxr_package import drift_reference
from training.cxr_synthetic import generate


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> CxrData:
    labels = generate(tmp_path_factory.mktemp("cxr") / "d", 24, seed=5, size=(80, 72))
    return load_cxr_data(labels, 32)


def test_every_image_gets_its_statistics_and_subsets_keep_them(data: CxrData) -> None:
    assert len(data.statistics) == len(data.table) == 24
    first = data.statistics[0]
    assert first == image_statistics(data.images[0], _decoded(data, 0))
    assert 0.0 <= first["image:p05"] <= first["image:mean"] <= first["image:p95"] <= 1.0
    assert first["source:aspect"] == pytest.approx(80 / 72)
    part = data.subset(np.array([3, 1]))
    assert part.statistics == [data.statistics[3], data.statistics[1]]


def test_the_reference_has_valid_bins_for_every_statistic_and_score(data: CxrData) -> None:
    rng = np.random.default_rng(0)
    val_logits = rng.normal(0, 2, (40, len(CXR_LABELS))).astype(np.float32)
    calibration = {label: {"scale": 0.5, "offset": -1.0} for label in CXR_LABELS}
    recorded = drift_reference(data.statistics, val_logits, calibration)
    bins = recorded  # FeatureBins validate edges and shares
    present = {name for name in IMAGE_STATISTICS if name in data.statistics[0]}
    assert {"image:mean", "image:std", "image:dark", "source:aspect"} <= present
    assert set(bins) == present | {score_name(label) for label in CXR_LABELS}
    mean = bins["image:mean"]
    assert mean.n == 24
    assert len(mean.proportions) == 10
    # Serving's bin rule reproduces the recorded shares on the reference rows.
    values = [row["image:mean"] for row in data.statistics]
    counts = np.bincount([bin_of(v, mean) for v in values], minlength=10)
    assert counts / 24 == pytest.approx(mean.proportions)
    assert psi(mean.proportions, list(counts)) == pytest.approx(0.0, abs=1e-9)
    # Scores: the calibrated probabilities of the validation logits.
    tb = bins[score_name("tb")]
    assert tb.n == 40
    probs = expit(0.5 * val_logits[:, CXR_LABELS.index("tb")] - 1.0)
    counts = np.bincount([bin_of(float(p), tb) for p in probs], minlength=len(tb.proportions))
    assert counts / 40 == pytest.approx(tb.proportions)
    # The model card says what was recorded, and over how many images.
    card = drift_text(recorded)
    assert f"{len(present)} image statistics over 24 training images" in card
    assert "5 labels over 40 validation images" in card
    assert "`image:mean`" in card
    assert drift_text(None).startswith("None recorded")


def test_without_image_statistics_only_the_scores_are_recorded() -> None:
    logits = np.zeros((5, len(CXR_LABELS)), dtype=np.float32)
    calibration = {label: {"scale": 1.0, "offset": 0.0} for label in CXR_LABELS}
    recorded = drift_reference([], logits, calibration)
    assert set(recorded) == {score_name(label) for label in CXR_LABELS}
    assert recorded[score_name("tb")] == FeatureBins(edges=[], proportions=[1.0], n=5)


def test_serving_takes_the_same_statistics_from_the_same_file(data: CxrData) -> None:
    # Serving decodes at reduced resolution (target_size): the statistics barely move.
    for row in (0, 7):
        path = data.root / data.table["image"].iloc[row]
        raw = path.read_bytes()
        decode = decode_png if path.suffix.lower() == ".png" else decode_dicom
        decoded = decode(raw, target_size=32)
        served = image_statistics(to_model_input(decoded, size=32), decoded)
        trained = data.statistics[row]
        assert set(served) == set(trained)
        for name, value in trained.items():
            assert served[name] == pytest.approx(value, abs=0.02), name


def _decoded(data: CxrData, row: int) -> DecodedImage:
    path: Path = data.root / data.table["image"].iloc[row]
    raw = path.read_bytes()
    return decode_png(raw) if path.suffix.lower() == ".png" else decode_dicom(raw)
