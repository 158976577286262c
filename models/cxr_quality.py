"""The chest X-ray quality gate: refuse what the model was not built for (contract C7).

``assess(decoded)`` runs before any score and answers ``QualityResult(ok, reason,
detail)``. Reasons are machine-readable codes (:data:`QUALITY_REASONS`); decoding
failures have their own codes on :class:`models.cxr_preprocess.ImageError` with the
same spelling where they overlap (``colour``, ``multi-frame``).

Checks, in order (the first failure is the reason):

1. ``multi-frame`` / ``colour``: more than one frame, or colour pixels.
2. ``not-cr-dx``: a DICOM whose Modality is not CR or DX (PNG/JPEG carry no modality;
   the pixel statistics below are their check).
3. ``not-chest``: BodyPartExamined names another region, or the study / series /
   protocol text names another region and not the chest.
4. ``lateral-view``: ViewPosition LL/RL/LATERAL, or a description with LAT/LATERAL.
5. ``too-small``: the stored image's short side is under ``min_side`` (default 224,
   the model input: anything smaller would be upsampled).
6. ``out-of-distribution``: pixel statistics of a 64 x 64 area-downsampled copy are
   outside what a frontal chest radiograph in display polarity looks like
   (:class:`OodThresholds`).

How the out-of-distribution thresholds were set: each statistic encodes a property
every frontal chest radiograph has (contrast; not saturated; the mediastinum and
spine, in the middle third, brighter than both lung fields beside it at mid height;
the two halves roughly mirror each other). Limits were placed well outside the
range seen on synthetic radiographs of ``training.cxr_synthetic`` (300 images at
512 px from ``benchmarks/bench_cxr_quality.py`` plus 100 at 256 px with each finding
forced, all exposure and DICOM variants; e.g. minimum contrast 0.15, mediastinum
margin 0.22, symmetry 0.64, diaphragm margin 0.04) and inside the range of
out-of-scope inputs (flat, noise, gradients, inverted polarity, a rotated chest,
abdomen-, skull-, hand- and document-like images). They were not tuned on real radiographs:
the one real chest radiograph at hand (RG1 of the ``pydicom-data`` package, a CR PA)
passes every check with room (contrast 0.147, mediastinum 0.249, symmetry 0.905,
diaphragm 0.224), and a real knee (RG3) would fail on 44 % saturated pixels besides its
header. One image is no validation: a site should run the benchmark on its own in-scope
images and set ``OodThresholds`` in configuration if its refusal rate is not ~0.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.cxr_preprocess import DecodedImage, area_resize

__all__ = [
    "QUALITY_REASONS",
    "OodThresholds",
    "QualityResult",
    "assess",
    "pixel_statistics",
]

QUALITY_REASONS: dict[str, str] = {
    "multi-frame": "more than one frame",
    "colour": "colour pixels",
    "not-cr-dx": "DICOM modality is not CR or DX",
    "not-chest": "the body part or description is not the chest",
    "lateral-view": "a lateral view; the model reads frontal (PA/AP) views",
    "too-small": "the image is smaller than the model input",
    "unreadable": "the pixels are not a finite image",
    "out-of-distribution": "pixel statistics unlike a frontal chest radiograph",
}

_CHEST_PARTS = {"CHEST", "THORAX", "LUNG", "LUNGS", "RIB", "RIBS", "TORAX", "THORAXCHEST"}
_OTHER_REGIONS = re.compile(
    r"\b(ABDOMEN|ABD|PELVIS|HIP|KNEE|HAND|WRIST|FOOT|ANKLE|SKULL|HEAD|BRAIN|SPINE|"
    r"CSPINE|LSPINE|SHOULDER|ELBOW|FEMUR|TIBIA|HUMERUS|FOREARM|BREAST|MAMMO|DENTAL|"
    r"SINUS|NECK|LEG|ARM|EXTREMITY)\b"
)
_CHEST_WORDS = re.compile(r"\b(CHEST|THORAX|LUNGS?|CXR|TORAX|PA|AP)\b")
_LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "XTABLE"}
_LATERAL_WORDS = re.compile(r"\b(LAT|LATERAL|LL|RL)\b")


class QualityResult(BaseModel):
    """The gate's answer: ``ok`` or a reason code with a plain-words detail."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    reason: str | None = Field(default=None, description="Code from QUALITY_REASONS.")
    detail: str = ""


class OodThresholds(BaseModel):
    """Limits on :func:`pixel_statistics` (see the module docstring for their origin)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_std: float = Field(default=0.08, description="Least contrast (std of 64x64 pixels).")
    max_white: float = Field(default=0.35, description="Most pixels >= 0.98 (fraction).")
    max_black: float = Field(default=0.5, description="Most pixels <= 0.02 (fraction).")
    min_mediastinum: float = Field(
        default=0.04,
        description="Least brightness of the central band over the darker lung band "
        "at mid height (catches inverted polarity and non-chest images).",
    )
    min_symmetry: float = Field(
        default=0.5, description="Least correlation of the image with its mirror image."
    )
    min_diaphragm: float = Field(
        default=0.0,
        description="Least brightness of the bottom rows over the lung bands (lungs are "
        "darker than the upper abdomen below them).",
    )


def pixel_statistics(pixels: np.ndarray) -> dict[str, float]:
    """The statistics the out-of-distribution check uses, from a 64 x 64 copy.

    Args:
        pixels: a 2-D image in [0, 1], white = dense.

    Returns:
        ``std``, ``white``, ``black``, ``mediastinum`` (central band minus the darker
        lung band: one opaque hemithorax still passes), ``symmetry``, ``diaphragm``
        (how much brighter the bottom rows are than the lung bands above them).
    """
    small = area_resize(np.asarray(pixels, dtype=np.float32), (64, 64))
    mid = small[19:45]  # rows 0.3-0.7 of the height
    centre = mid[:, 29:35].mean()  # columns 0.45-0.55
    left, right = mid[:, 11:22].mean(), mid[:, 42:53].mean()  # lung columns
    low = small[54:61]  # rows 0.85-0.95: below the diaphragm in a chest film
    below = min(low[:, 11:22].mean() - left, low[:, 42:53].mean() - right)
    mirrored = small[:, ::-1]
    a, b = small - small.mean(), mirrored - mirrored.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return {
        "std": float(small.std()),
        "white": float((small >= 0.98).mean()),
        "black": float((small <= 0.02).mean()),
        "mediastinum": float(centre - min(left, right)),
        "symmetry": float((a * b).sum() / denom) if denom > 0 else 0.0,
        "diaphragm": float(below),
    }


def _fail(reason: str, detail: str) -> QualityResult:
    return QualityResult(ok=False, reason=reason, detail=detail)


def _check_ood(pixels: np.ndarray, limits: OodThresholds) -> QualityResult | None:
    stats = pixel_statistics(pixels)
    checks: list[tuple[bool, str]] = [
        (stats["std"] >= limits.min_std, f"contrast {stats['std']:.3f} < {limits.min_std}"),
        (stats["white"] <= limits.max_white, f"{stats['white']:.0%} of pixels saturated white"),
        (stats["black"] <= limits.max_black, f"{stats['black']:.0%} of pixels black"),
        (
            stats["mediastinum"] >= limits.min_mediastinum,
            f"central band only {stats['mediastinum']:+.3f} brighter than the lung fields "
            "(inverted polarity or not a frontal chest image)",
        ),
        (
            stats["symmetry"] >= limits.min_symmetry,
            f"left-right symmetry {stats['symmetry']:.2f} < {limits.min_symmetry}",
        ),
    ]
    checks.append(
        (
            stats["diaphragm"] >= limits.min_diaphragm,
            f"bottom rows only {stats['diaphragm']:+.3f} brighter than the lung bands",
        )
    )
    for passed, detail in checks:
        if not passed:
            return _fail("out-of-distribution", detail)
    return None


def assess(
    decoded: DecodedImage,
    *,
    min_side: int = 224,
    ood: OodThresholds | None = None,
    check: Literal["all", "header"] = "all",
) -> QualityResult:
    """Decide whether the model may read this image.

    Args:
        decoded: from :func:`models.cxr_preprocess.decode_dicom` or ``decode_png``.
        min_side: smallest allowed short side of the stored image, in pixels.
        ood: out-of-distribution limits (defaults: :class:`OodThresholds`).
        check: ``"header"`` skips the pixel statistics.

    Returns:
        ``QualityResult(ok=True)`` or the first failed check's reason.
    """
    if decoded.frames > 1:
        return _fail("multi-frame", f"{decoded.frames} frames; one radiograph is expected")
    if decoded.colour or decoded.pixels.ndim != 2:
        return _fail("colour", "colour pixels; radiographs are greyscale")
    if decoded.source == "dicom" and decoded.modality not in {"CR", "DX"}:
        return _fail("not-cr-dx", f"modality {decoded.modality or 'missing'}; CR or DX expected")
    text = " ".join(decoded.descriptions)
    part = (decoded.body_part or "").replace(" ", "")
    if part and part not in _CHEST_PARTS:
        return _fail("not-chest", f"body part {decoded.body_part}; chest expected")
    if not part and _OTHER_REGIONS.search(text) and not _CHEST_WORDS.search(text):
        return _fail("not-chest", "the description names another body region")
    if (decoded.view or "") in _LATERAL_VIEWS or _LATERAL_WORDS.search(text):
        return _fail("lateral-view", f"view {decoded.view or text!r}; PA or AP expected")
    if min(decoded.rows, decoded.columns) < min_side:
        return _fail(
            "too-small",
            f"{decoded.rows} x {decoded.columns} pixels; the short side must be >= {min_side}",
        )
    if not np.isfinite(decoded.pixels).all():
        return _fail("unreadable", "the pixels are not finite")
    if check == "all":
        failed = _check_ood(decoded.pixels, ood or OodThresholds())
        if failed is not None:
            return failed
    return QualityResult(ok=True, reason=None, detail="")
