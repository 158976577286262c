"""Each out-of-distribution check of the quality gate decides on its own, on images
that were not used to set its limits.

The limits in :class:`models.cxr_quality.OodThresholds` were placed from the synthetic
radiographs of ``benchmarks/bench_cxr_quality.py`` (seed 5) and the ones in
``test_cxr_quality.py`` (seed 11). Here a fresh seed and another image size give the
held-out in-distribution set, and each check gets an image that fails that check and
no other (checked on the statistics first), so removing any one check fails a test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.cxr_preprocess import DecodedImage, decode_dicom
from models.cxr_quality import OodThresholds, assess, pixel_statistics
from training.cxr_synthetic import generate

HELD_OUT_SEED = 2026  # never used to set a limit
LIMITS = OodThresholds()


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> list[DecodedImage]:
    folder: Path = tmp_path_factory.mktemp("held-out")
    generate(folder, 30, seed=HELD_OUT_SEED, size=320)
    return [decode_dicom(p.read_bytes()) for p in sorted((folder / "images").glob("*.dcm"))]


def _failed_checks(pixels: np.ndarray) -> set[str]:
    stats = pixel_statistics(pixels)
    passed = {
        "std": stats["std"] >= LIMITS.min_std,
        "white": stats["white"] <= LIMITS.max_white,
        "black": stats["black"] <= LIMITS.max_black,
        "mediastinum": stats["mediastinum"] >= LIMITS.min_mediastinum,
        "symmetry": stats["symmetry"] >= LIMITS.min_symmetry,
        "diaphragm": stats["diaphragm"] >= LIMITS.min_diaphragm,
    }
    return {name for name, ok in passed.items() if not ok}


def _band(a: float, b: float, n: int) -> slice:
    return slice(int(a * n), int(b * n))


def _low_contrast(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.3 * (x - 0.5)


def _saturated_top(x: np.ndarray) -> np.ndarray:
    y = x.copy()
    y[: int(0.4 * x.shape[0])] = 1.0
    return y


def _black_frame(x: np.ndarray) -> np.ndarray:
    h, w = x.shape
    y = x.copy()
    side = int(11 / 64 * w)
    y[:, :side] = 0.0
    y[:, w - side :] = 0.0
    y[: int(19 / 64 * h)] = 0.0
    return y


def _dark_mediastinum(x: np.ndarray) -> np.ndarray:
    h, w = x.shape
    rows = _band(0.3, 0.7, h)
    lungs = np.concatenate([x[rows, _band(0.17, 0.34, w)], x[rows, _band(0.66, 0.83, w)]], 1)
    y = x.copy()
    y[_band(0.25, 0.75, h), _band(0.42, 0.58, w)] = lungs.mean() - 0.05
    return y


def _lopsided_apex(x: np.ndarray) -> np.ndarray:
    h, w = x.shape
    y = x.copy()
    y[: int(0.3 * h), : w // 2] = 0.95
    y[: int(0.3 * h), w // 2 :] = 0.05
    return y


def _dark_below_lungs(x: np.ndarray) -> np.ndarray:
    y = x.copy()
    y[_band(0.8, 1.0, x.shape[0])] = 0.05
    return y


# Each check, an image transformation that fails it alone, and words its detail uses.
ONE_CHECK: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "std": (_low_contrast, "contrast"),
    "white": (_saturated_top, "saturated white"),
    "black": (_black_frame, "black"),
    "mediastinum": (_dark_mediastinum, "central band"),
    "symmetry": (_lopsided_apex, "symmetry"),
    "diaphragm": (_dark_below_lungs, "bottom rows"),
}


def test_held_out_synthetic_radiographs_pass(held_out: list[DecodedImage]) -> None:
    refused = [(i, r.detail) for i, d in enumerate(held_out) if not (r := assess(d)).ok]
    assert refused == []


@pytest.mark.parametrize("check", list(ONE_CHECK))
def test_each_check_refuses_alone(check: str, held_out: list[DecodedImage]) -> None:
    transform, words = ONE_CHECK[check]
    for decoded in held_out[:5]:
        pixels = transform(decoded.pixels.astype(np.float32))
        assert _failed_checks(pixels) == {check}  # the image fails this check only
        result = assess(dataclasses.replace(decoded, pixels=pixels))
        assert result.reason == "out-of-distribution"
        assert words in result.detail


def test_every_check_is_exercised() -> None:
    assert set(ONE_CHECK) == {"std", "white", "black", "mediastinum", "symmetry", "diaphragm"}
    assert len(pixel_statistics(np.zeros((64, 64), np.float32))) == len(ONE_CHECK)
