"""Quality gate and bad-input robustness (docs/reliability.md "Bad input")."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from models.cxr_preprocess import DecodedImage, ImageError, decode_image
from models.cxr_quality import QUALITY_REASONS, OodThresholds, assess
from training.cxr_bad_inputs import (
    BadInput,
    bad_dicom_cases,
    bad_image_cases,
    out_of_scope_pixel_cases,
)
from training.cxr_synthetic import generate

CASES = bad_dicom_cases() + bad_image_cases() + out_of_scope_pixel_cases()


def _screen(data: bytes) -> str | None:
    try:
        decoded = decode_image(data, target_size=224)
    except ImageError as exc:
        return exc.reason
    result = assess(decoded)
    return None if result.ok else result.reason


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_bad_input_gets_its_reason_quickly_and_in_bounded_memory(case: BadInput) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        reason = _screen(case.data)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason in case.expected, f"{case.name}: got {reason}"
    assert elapsed < 2.0
    assert peak < 200 * 2**20


def test_cases_cover_the_reliability_list() -> None:
    names = " ".join(c.name for c in CASES)
    for needle in (
        "truncated", "no preamble", "pixel data missing", "pixel data short",
        "pixel data long", "huge", "many frames", "1 bits", "32 bits", "64 bits",
        "colour", "float", "without a decoder", "modality", "body part", "lateral",
        "DICOMDIR", "deep sequences", "100 MB", "decompression bomb", "non-image",
        "CMYK", "16-bit", "palette", "alpha", "tiny",
    ):  # fmt: skip
        assert needle in names, needle
    reasons = {r for c in CASES for r in c.expected if r}
    assert set(QUALITY_REASONS) - {"unreadable"} <= reasons


def test_in_scope_synthetic_radiographs_pass(tmp_path: Path) -> None:
    generate(tmp_path, 24, seed=11, size=256)
    refused = [
        (p.name, r)
        for p in sorted((tmp_path / "images").glob("*.dcm"))
        if (r := _screen(p.read_bytes()))
    ]
    assert refused == []


def _decoded(**kwargs: object) -> DecodedImage:
    base: dict[str, object] = {
        "pixels": np.zeros((8, 8), np.float32),
        "source": "dicom",
        "rows": 2000,
        "columns": 2000,
        "modality": "CR",
        "body_part": "CHEST",
        "view": "PA",
    }
    base.update(kwargs)
    return DecodedImage(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"modality": None}, "not-cr-dx"),
        ({"modality": "MG"}, "not-cr-dx"),
        ({"body_part": "SKULL"}, "not-chest"),
        ({"body_part": None, "descriptions": ("XR HAND 2 VIEWS",)}, "not-chest"),
        ({"body_part": None, "descriptions": ("CHEST LAT",)}, "lateral-view"),
        ({"view": "RL"}, "lateral-view"),
        ({"rows": 200}, "too-small"),
        ({"frames": 2}, "multi-frame"),
        ({"colour": True}, "colour"),
        ({"pixels": np.full((8, 8), np.nan, np.float32)}, "unreadable"),
        ({}, None),
        ({"body_part": None, "descriptions": ("CHEST PA",)}, None),
        ({"source": "png", "modality": None, "body_part": None, "view": None}, None),
    ],
)
def test_header_checks(kwargs: dict[str, object], reason: str | None) -> None:
    result = assess(_decoded(**kwargs), check="header")
    assert result.reason == reason
    assert result.ok is (reason is None)


def test_thresholds_are_configurable() -> None:
    chest = next(c for c in CASES if c.name == "valid 8-bit PNG")
    decoded = decode_image(chest.data)
    assert assess(decoded).ok
    strict = OodThresholds(min_std=0.5)
    result = assess(decoded, ood=strict)
    assert result.reason == "out-of-distribution"
    assert "contrast" in result.detail
