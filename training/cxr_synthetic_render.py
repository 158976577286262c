"""Render one synthetic radiograph: anatomy, findings with their masks, exposure, noise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from training.cxr_synthetic_anatomy import Anatomy, Array, compose, smooth_noise

__all__ = ["FINDINGS", "SyntheticCase", "render_case"]

FINDINGS: tuple[str, ...] = ("tb", "nodule", "consolidation", "effusion")
# Largest side at which anatomy is composed before upsampling.
_WORK_PX = 512


@dataclass
class SyntheticCase:
    """One rendered radiograph and what is in it."""

    image: Array  # display density, MONOCHROME2, float32 in [0, 1]
    mask: NDArray[np.bool_]  # union of finding masks
    findings: dict[str, bool]
    sex: str
    age: int
    attrs: dict[str, object] = field(default_factory=dict)
    # Each present finding's own mask (same shape as ``mask``; their union is ``mask``).
    finding_masks: dict[str, NDArray[np.bool_]] = field(default_factory=dict)


def _sample_in(anat: Anatomy, region: Array, ymin: float, ymax: float) -> tuple[float, float]:
    """A random point inside ``region`` between heights ymin and ymax, as (y, x)."""
    step = max(1, anat.shape[0] // 128)
    sub, ys, xs = region[::step, ::step], anat.y[::step, ::step], anat.x[::step, ::step]
    band = (ys > ymin) & (ys < ymax)
    for candidates in (band & (sub > 0.95), band & (sub > 0.5), sub > 0.5):
        idx = np.flatnonzero(candidates)
        if idx.size:
            pick = int(anat.rng.choice(idx))
            return float(ys.flat[pick]), float(xs.flat[pick])
    pick = int(np.argmax(sub))
    return float(ys.flat[pick]), float(xs.flat[pick])


def _nodule(anat: Anatomy, lungs: Array, density: Array) -> NDArray[np.bool_]:
    rng = anat.rng
    ny, nx = _sample_in(anat, lungs, anat.top + 0.08, anat.dia_r - 0.05)
    rad = rng.uniform(0.012, 0.03)
    ang = np.arctan2(anat.y - ny, anat.x - nx)
    lob = 1 + 0.12 * np.sin(3 * ang + rng.uniform(0, 6)) + 0.06 * np.sin(5 * ang)
    d = np.sqrt((anat.y - ny) ** 2 + (anat.x - nx) ** 2) / (rad * lob)
    sphere = np.sqrt(np.clip(1 - d * d, 0, 1))
    density += rng.uniform(0.10, 0.18) * (0.35 + 0.65 * sphere) * anat.soft((1 - d) * rad, 1.2)
    return np.asarray(d < 1.0)


def _consolidation(anat: Anatomy, lungs: Array, density: Array) -> NDArray[np.bool_]:
    rng = anat.rng
    cy, cx = _sample_in(anat, lungs, anat.top + 0.25, anat.dia_r - 0.02)
    ry, rx = rng.uniform(0.06, 0.11), rng.uniform(0.05, 0.09)
    e = ((anat.y - cy) / ry) ** 2 + ((anat.x - cx) / rx) ** 2
    noise = smooth_noise(rng, anat.shape, 14)
    region = anat.soft(((1.0 - e) * 0.05 + 0.02 * noise).astype(np.float32), 4) * lungs
    fluffy = 0.7 + 0.3 * smooth_noise(rng, anat.shape, 40)
    density += rng.uniform(0.16, 0.24) * region * fluffy
    return np.asarray(region > 0.5)


def _tb(anat: Anatomy, lungs: Array, density: Array) -> NDArray[np.bool_]:
    rng = anat.rng
    side = -1 if rng.random() < 0.6 else 1  # right upper lobe most often
    lung = anat.lung(side) * lungs
    upper = anat.top + 0.2
    cy, cx = _sample_in(anat, lung, anat.top + 0.05, upper)
    e = ((anat.y - cy) / 0.09) ** 2 + ((anat.x - cx) / 0.08) ** 2
    patches = smooth_noise(rng, anat.shape, 30)
    infil = anat.soft(((1 - e) * 0.04 + 0.03 * patches - 0.005).astype(np.float32), 3) * lung
    density += 0.15 * infil * (0.6 + 0.4 * smooth_noise(rng, anat.shape, 60))
    mask = infil > 0.5
    if rng.random() < 0.75:  # cavity: thick wall, lucent centre
        r_out = rng.uniform(0.018, 0.032)
        d = np.sqrt((anat.y - cy) ** 2 + (anat.x - cx) ** 2) / r_out
        wall = anat.soft((1 - d) * r_out, 1.2)
        hole = anat.soft((0.65 - d) * r_out, 1.2)
        density += 0.14 * wall - 0.2 * hole
        mask |= d < 1.0
    # Fibrotic streaks toward the hilum.
    hx, hy = anat.cx + side * 0.085, anat.top + 0.28
    vy, vx = hy - cy, hx - cx
    norm = np.hypot(vx, vy)
    t = ((anat.y - cy) * vy + (anat.x - cx) * vx) / (norm * norm)
    perp = np.abs((anat.y - cy) * vx - (anat.x - cx) * vy) / norm
    streak = anat.soft((0.004 - perp).astype(np.float32), 1.0) * (t > 0) * (t < 0.7) * lung
    density += 0.08 * streak
    return np.asarray(mask | (streak > 0.5))


def _effusion(anat: Anatomy, lungs: Array, density: Array) -> NDArray[np.bool_]:
    rng = anat.rng
    side = -1 if rng.random() < 0.5 else 1
    lung = anat.lung(side)
    dome = anat.dia_r if side < 0 else anat.dia_l
    level = dome - rng.uniform(0.06, 0.16)
    lat = anat.cx + side * (anat.half - 0.03)
    s = np.clip(side * (anat.x - anat.cx) / np.abs(lat - anat.cx), 0, 1)
    meniscus = level + 0.05 - 0.09 * s**2  # fluid climbs the lateral chest wall
    fluid = anat.soft((anat.y - meniscus).astype(np.float32), 5) * lung
    grad = np.clip((anat.y - meniscus) / 0.08, 0.3, 1.0)
    density += 0.30 * fluid * grad
    return np.asarray(fluid > 0.5)


_FINDING_FNS: dict[str, Callable[[Anatomy, Array, Array], NDArray[np.bool_]]] = {
    "tb": _tb,
    "nodule": _nodule,
    "consolidation": _consolidation,
    "effusion": _effusion,
}


def render_case(
    seed: int,
    index: int,
    shape: tuple[int, int],
    *,
    findings: list[str] | None = None,
    patient: int | None = None,
) -> SyntheticCase:
    """Render one synthetic radiograph.

    Args:
        seed: data set seed.
        index: image number; the image depends only on ``(seed, index)``.
        shape: (rows, columns) in pixels.
        findings: force these findings (names from :data:`FINDINGS`); ``None`` draws them
            (about half the images are normal).
        patient: patient number; the anatomy, sex and age depend on it (default ``index``),
            findings, exposure and noise on ``index``.

    Returns:
        The image in display density (MONOCHROME2, 0-1), the union mask, each finding's
        own mask and the labels.
    """
    body_rng = np.random.default_rng([seed, index if patient is None else patient, 7])
    sex = "female" if body_rng.random() < 0.5 else "male"
    age = int(body_rng.integers(15, 86))
    # Anatomy and findings are smooth: compose them at <= _WORK_PX and upsample, then add
    # full-resolution noise. This keeps 1024 px and 3000 x 2500 images fast.
    scale = min(1.0, _WORK_PX / max(shape))
    work = (max(64, round(shape[0] * scale)), max(64, round(shape[1] * scale)))
    anat = Anatomy(body_rng, work, sex)
    density, lungs, _ = compose(anat)
    rng = np.random.default_rng([seed, index, 8])
    anat.rng = rng  # findings and exposure vary per image
    if findings is None:
        findings = []
        if rng.random() < 0.5:
            k = 1 if rng.random() < 0.75 else 2
            findings = [str(f) for f in rng.choice(FINDINGS, size=k, replace=False)]
    unknown = set(findings) - set(FINDINGS)
    if unknown:
        raise ValueError(f"unknown findings {sorted(unknown)}; allowed: {list(FINDINGS)}")
    own: dict[str, NDArray[np.bool_]] = {}
    for name in sorted(findings):  # this order fixes the random draws: keep it
        own[name] = _FINDING_FNS[name](anat, lungs, density)
    mask = np.zeros(work, dtype=bool)
    for finding_mask in own.values():
        mask |= finding_mask
    # Exposure, heel effect and detector blur.
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-0.05, 0.05)
    gamma = rng.uniform(0.85, 1.2)
    heel = 1 + rng.uniform(-0.06, 0.06) * (anat.y - 0.5)
    img = np.clip(density * gain * heel + offset, 0.0, 1.0) ** gamma
    img = ndimage.gaussian_filter(img, rng.uniform(0.5, 0.9))
    if work != shape:
        img = ndimage.zoom(img, (shape[0] / work[0], shape[1] / work[1]), order=1)
        rows = np.minimum((np.arange(shape[0]) * work[0]) // shape[0], work[0] - 1)
        cols = np.minimum((np.arange(shape[1]) * work[1]) // shape[1], work[1] - 1)
        mask = mask[rows[:, None], cols[None, :]]
        own = {name: m[rows[:, None], cols[None, :]] for name, m in own.items()}
    # Quantum noise (more where fewer photons reach the detector) and fine texture.
    noise_sd = rng.uniform(0.006, 0.018)
    noise = rng.standard_normal(shape, dtype=np.float32)
    img = img + noise * np.float32(noise_sd) * np.sqrt(1.05 - np.clip(img, 0, 1))
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return SyntheticCase(
        image=img,
        mask=mask,
        findings={f: f in findings for f in FINDINGS},
        sex=sex,
        age=age,
        attrs={"modality": "CR" if rng.random() < 0.5 else "DX"},
        finding_masks=own,
    )
