"""Seeded synthetic frontal chest radiographs with labelled findings and masks.

No public X-ray data can be downloaded where Tonle is built and tested, so the demo
and the tests use these images. Each image is composed in a "display density" space
(0 = black air, 1 = white bone; MONOCHROME2) from simple vectorised shapes:

* soft tissue of the trunk, shoulders and (for women) breast shadows;
* two lung fields with apices, lateral costophrenic angles and diaphragm domes
  (the right hemidiaphragm higher), hila and radiating vascular markings;
* heart and mediastinum, vertebral column, posterior ribs, clavicles;
* findings: a solitary nodule, a lobar-style consolidation, an upper-zone
  cavitating TB-like pattern, a pleural effusion with a meniscus.

Exposure (gain, offset, gamma, heel effect), quantum noise and detector blur vary per
image. The result is written as a real DICOM file (CR or DX, MONOCHROME1 or
MONOCHROME2, 12-16 bits stored, PixelSpacing, synthetic patient and study
attributes, valid UIDs), the union mask of the findings as a PNG, and one row per
image in ``labels.csv`` (columns in :data:`LABEL_COLUMNS`, contract C7).

Every image depends only on ``(seed, index)``, so a data set is reproducible.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage

__all__ = [
    "FINDINGS",
    "LABEL_COLUMNS",
    "SyntheticCase",
    "generate",
    "parse_size",
    "render_case",
    "write_dicom",
]

logger = logging.getLogger(__name__)

FINDINGS: tuple[str, ...] = ("tb", "nodule", "consolidation", "effusion")
LABEL_COLUMNS: tuple[str, ...] = (
    "image",
    "patient_id",
    "sex",
    "age",
    "site",
    "abnormal",
    "tb",
    "nodule",
    "consolidation",
    "effusion",
    "mask",
)
SITES: tuple[str, ...] = ("site-a", "site-b", "site-c")
# Physical height of the field of view; pixel spacing follows from the image size.
FIELD_HEIGHT_MM = 430.0
# Largest side at which anatomy is composed before upsampling.
_WORK_PX = 512

Array = NDArray[np.float32]


@dataclass
class SyntheticCase:
    """One rendered radiograph and what is in it."""

    image: Array  # display density, MONOCHROME2, float32 in [0, 1]
    mask: NDArray[np.bool_]  # union of finding masks
    findings: dict[str, bool]
    sex: str
    age: int
    attrs: dict[str, object] = field(default_factory=dict)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"512"`` (square) or ``"3000x2500"`` (rows x columns).

    Raises:
        ValueError: when the text is not a size between 64 and 4096 pixels.
    """
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"size {text!r} is not N or ROWSxCOLS") from exc
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(64 <= v <= 4096 for v in values):
        raise ValueError(f"size {text!r}: rows and columns must each be 64-4096 pixels")
    return values[0], values[1]


def _f32(a: NDArray[Any]) -> Array:
    return np.asarray(a, dtype=np.float32)


def _sigmoid(z: NDArray[Any]) -> Array:
    return _f32(0.5 + 0.5 * np.tanh(0.5 * z))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> Array:
    """Band-limited noise in about [-1, 1] with ``cells`` blobs across the image.

    Gaussian interpolation of a coarse random grid, done as two small matrix products
    (much faster than spline zooming at full resolution).
    """
    grid = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)

    def weights(n: int) -> Array:
        pos = (np.arange(n, dtype=np.float32) + 0.5) / n * cells + 0.5
        nodes = np.arange(cells + 2, dtype=np.float32)
        w = np.exp(-(((pos[:, None] - nodes[None, :]) / 0.7) ** 2))
        return _f32(w / w.sum(axis=1, keepdims=True))

    big = weights(shape[0]) @ grid @ weights(shape[1]).T
    return _f32(big / (np.abs(big).max() + 1e-6))


class _Anatomy:
    """Per-patient anatomy on a normalised grid (y down, x right; image left = patient right)."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], sex: str) -> None:
        rows, cols = shape
        self.shape = shape
        self.px = 1.0 / rows  # one pixel in normalised height units
        ys = (np.arange(rows, dtype=np.float32) + 0.5) / rows
        xs = (np.arange(cols, dtype=np.float32) + 0.5) / cols
        self.y, self.x = np.meshgrid(ys, xs, indexing="ij")
        u = rng.uniform
        self.cx = 0.5 + u(-0.02, 0.02)  # midline
        self.top = u(0.12, 0.16)  # lung apex
        self.half = u(0.29, 0.34)  # half thorax width at the widest
        self.dia_r = u(0.64, 0.70)  # right hemidiaphragm dome (image left)
        self.dia_l = self.dia_r + u(0.01, 0.04)  # left is lower
        self.heart_w = u(0.14, 0.18)  # half width of the cardiac shadow
        self.sex = sex
        self.rng = rng
        self._lungs: dict[tuple[int, float], Array] = {}

    def soft(self, signed: NDArray[Any], width_px: float = 1.5) -> Array:
        """Anti-aliased inside-indicator for a signed distance (positive = inside)."""
        return _sigmoid(signed / (width_px * self.px))

    def lung(self, side: int, grow: float = 0.0) -> Array:
        """Soft mask of one lung field; side -1 = image left (patient right), +1 = image right.

        ``grow`` enlarges the field outwards (used for the rib cage around it).
        """
        key = (side, grow)
        if key not in self._lungs:
            self._lungs[key] = self._lung(side, grow)
        return self._lungs[key]

    def _lung(self, side: int, grow: float) -> Array:
        x, y = self.x, self.y
        dome = (self.dia_r if side < 0 else self.dia_l) + grow
        cpa = dome + 0.07  # depth of the lateral costophrenic angle
        lat_max = self.cx + side * (self.half - 0.02 + grow)
        med = self.cx + side * 0.055
        t = np.clip((y - self.top) / (cpa - self.top), 0.0, 1.0)
        # The lateral border sweeps out from the apex, widest near the base.
        reach = 0.18 + 0.82 * np.clip(t / 0.75, 0.0, 1.0) ** 0.5
        lat = med + (lat_max - med) * reach + side * grow
        span = np.abs(lat_max - med)
        s = np.clip(side * (x - med) / span, 0.0, 1.0)
        # Apex: a rounded cap over the medial two thirds.
        apex_y = self.top - grow + 0.05 * ((s - 0.45) / 0.45) ** 2
        # Diaphragm dome: highest a little lateral of mid-lung, deep at the lateral angle.
        dia_y = dome + 0.025 * ((s - 0.45) / 0.45) ** 2 + 0.05 * np.clip(s - 0.8, 0, 1) ** 1.2 / 0.2
        d = np.minimum(
            np.minimum(side * (lat - x), side * (x - med)), np.minimum(dia_y - y, y - apex_y)
        )
        return self.soft(d.astype(np.float32), 2.0)

    def heart(self) -> Array:
        """Soft mask of the cardiac shadow (mostly to the patient's left = image right)."""
        hx = self.cx + 0.055
        hy = (self.dia_r + self.dia_l) / 2 - 0.06
        rot = 0.55  # long axis points down and to the patient's left (image right)
        dx, dy = self.x - hx, self.y - hy
        a = (dx * np.cos(rot) + dy * np.sin(rot)) / self.heart_w
        b = (-dx * np.sin(rot) + dy * np.cos(rot)) / (self.heart_w * 0.68)
        r = np.sqrt(a * a + b * b)
        heart = self.soft(((1.0 - r) * 0.12).astype(np.float32), 2.5)
        # Upper mediastinum: great vessels and the aortic knob on the patient's left.
        upper_w = 0.06 + 0.015 * np.exp(-(((self.y - self.top - 0.14) / 0.03) ** 2))
        shift = 0.01 + 0.012 * np.exp(-(((self.y - self.top - 0.14) / 0.03) ** 2))
        med = self.soft((upper_w - np.abs(self.x - self.cx - shift)).astype(np.float32), 2.5)
        med = med * self.soft((hy - self.y).astype(np.float32), 4)
        return np.maximum(heart, med)


def _compose(anat: _Anatomy) -> tuple[Array, Array, Array]:
    """Normal anatomy. Returns (density, lungs mask, ribs pattern)."""
    rng, x, y, cx = anat.rng, anat.x, anat.y, anat.cx
    ax = np.abs(x - cx)
    # Trunk: neck, sloping shoulders, chest wall; arms beyond a dark gap.
    shoulder_y = anat.top - 0.03
    hw = 0.08 + (anat.half + 0.1 - 0.08) * np.clip((y - shoulder_y + 0.08) / 0.14, 0, 1) ** 0.6
    hw = hw - 0.03 * np.clip(y - 0.6, 0, None)
    body = anat.soft((hw - ax).astype(np.float32), 4.0)
    arm_in, arm_out = anat.half + 0.125, anat.half + 0.3
    arm = anat.soft((np.minimum(ax - arm_in, arm_out - ax)).astype(np.float32), 4.0)
    arm = arm * anat.soft((y - shoulder_y - 0.04).astype(np.float32), 6.0)
    dx = np.clip(ax / hw, 0, 1)
    thickness = np.sqrt(np.clip(1.0 - dx * dx, 0.0, 1.0))
    density = 0.04 + body * (0.30 + 0.2 * thickness) + arm * (0.22 + 0.06 * body)
    humerus = anat.soft((0.03 - np.abs(ax - (arm_in + arm_out) / 2)).astype(np.float32), 3.0)
    density += 0.12 * humerus * arm
    lung_r, lung_l = anat.lung(-1), anat.lung(1)
    heart = anat.heart()
    lungs = np.clip((lung_r + lung_l) * (1 - heart), 0.0, 1.0)
    # Lungs are darkest in the mid zones and lighter towards the apices and bases.
    zone = np.clip((y - anat.top) / 0.3, 0.0, 1.0) ** 0.6
    density -= lungs * (0.22 + 0.07 * zone)
    density += heart * (0.08 + 0.06 * thickness)
    # Upper abdomen (liver, spleen) below the domes is denser than the chest wall.
    abdomen = anat.soft((y - (anat.dia_r + anat.dia_l) / 2 - 0.03).astype(np.float32), 12.0)
    density += 0.07 * abdomen * body
    # Trachea: an air column in the upper mediastinum.
    trachea = anat.soft((0.014 - np.abs(x - cx + 0.004)).astype(np.float32), 2.0)
    trachea = trachea * anat.soft((anat.top + 0.2 - y).astype(np.float32), 5) * (y > 0.02)
    density -= 0.09 * trachea
    # Vertebral column with disc spaces, faint through the mediastinum.
    spine = anat.soft(((0.032 - ax) * 0.5).astype(np.float32), 3.0)
    discs = 0.5 + 0.5 * np.cos(2 * np.pi * (y - anat.top) / 0.04)
    density += spine * (0.04 + 0.03 * discs)
    # Posterior ribs: an implicit phase field; arches rising from the spine then
    # falling laterally. Anterior ribs: fainter bands descending towards the midline.
    dy = y - anat.top
    post = (dy + 0.03 + 0.45 * ax - 2.6 * ax * ax) / (0.055 + 0.03 * dy)
    frac = post - np.floor(post)
    band = np.exp(-(((frac - 0.5) / 0.17) ** 2))
    cortex = np.exp(-(((frac - 0.34) / 0.035) ** 2)) + np.exp(-(((frac - 0.66) / 0.035) ** 2))
    cage = np.maximum(anat.lung(-1, grow=0.03), anat.lung(1, grow=0.03)) * (post > 0.25)
    ant = (dy - 0.05 - 0.35 * (anat.half - ax)) / (0.07 + 0.02 * dy)
    afrac = ant - np.floor(ant)
    aband = np.exp(-(((afrac - 0.5) / 0.12) ** 2)) * (ax > 0.06) * (ant > 0.5) * (dy < 0.45)
    ribs = (0.05 * band + 0.035 * cortex + 0.025 * aband) * cage
    density += ribs
    # Clavicles: S-shaped bars from the sternal notch up and out to the shoulders.
    for side in (-1.0, 1.0):
        s = side * (x - cx)
        cy = anat.top + 0.035 - 0.12 * np.clip(s - 0.05, 0, None) + 0.012 * np.sin(s * 18)
        bar = anat.soft(((0.014 - np.abs(y - cy)) * 0.5).astype(np.float32), 2.0)
        density += 0.1 * bar * anat.soft((s - 0.035).astype(np.float32), 3) * (s < anat.half + 0.1)
    # Hila and vascular markings radiating from them, fading to the periphery.
    for side in (-1.0, 1.0):
        hx, hy = cx + side * 0.09, anat.top + 0.27
        r = np.sqrt((x - hx) ** 2 + (y - hy) ** 2)
        theta = np.arctan2(y - hy, side * (x - hx))
        hilum = np.exp(-((r / 0.04) ** 2))
        density += 0.1 * hilum * (lung_r if side < 0 else lung_l)
        for n, amp in ((360, 0.1), (1100, 0.06)):
            table = rng.random(n).astype(np.float32)
            table = ndimage.gaussian_filter1d(table, 1.0, mode="wrap")
            table = (table - table.min()) / (np.ptp(table) + 1e-6)
            wiggle = 0.06 * np.sin(r * 45 + rng.uniform(0, 6))
            idx = ((theta + wiggle + np.pi) / (2 * np.pi) * n).astype(np.int64) % n
            vessels = table[idx] ** 5 * np.exp(-r / (0.12 if n < 1000 else 0.2))
            density += amp * vessels * lungs
    density += 0.02 * _smooth_noise(rng, anat.shape, 50) * lungs
    # Breast shadows over the lower zones.
    if anat.sex == "female":
        for side in (-1.0, 1.0):
            bx, by = cx + side * 0.22, anat.dia_r + 0.03
            r = np.sqrt(((x - bx) / 0.17) ** 2 + ((y - by) / 0.13) ** 2)
            density += 0.06 * anat.soft(((1 - r) * 0.1).astype(np.float32), 6) * body
    # Gastric bubble under the left hemidiaphragm, sometimes.
    if rng.random() < 0.6:
        gx, gy = cx + 0.15, anat.dia_l + 0.06
        r = np.sqrt(((x - gx) / 0.05) ** 2 + ((y - gy) / 0.03) ** 2)
        density -= 0.12 * anat.soft(((1 - r) * 0.03).astype(np.float32), 2) * (y > gy - 0.005)
    return density.astype(np.float32), lungs.astype(np.float32), ribs.astype(np.float32)


def _sample_in(anat: _Anatomy, region: Array, ymin: float, ymax: float) -> tuple[float, float]:
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


def _nodule(anat: _Anatomy, lungs: Array, density: Array) -> NDArray[np.bool_]:
    rng = anat.rng
    ny, nx = _sample_in(anat, lungs, anat.top + 0.08, anat.dia_r - 0.05)
    rad = rng.uniform(0.012, 0.03)
    ang = np.arctan2(anat.y - ny, anat.x - nx)
    lob = 1 + 0.12 * np.sin(3 * ang + rng.uniform(0, 6)) + 0.06 * np.sin(5 * ang)
    d = np.sqrt((anat.y - ny) ** 2 + (anat.x - nx) ** 2) / (rad * lob)
    sphere = np.sqrt(np.clip(1 - d * d, 0, 1))
    density += rng.uniform(0.10, 0.18) * (0.35 + 0.65 * sphere) * anat.soft((1 - d) * rad, 1.2)
    return np.asarray(d < 1.0)


def _consolidation(anat: _Anatomy, lungs: Array, density: Array) -> NDArray[np.bool_]:
    rng = anat.rng
    cy, cx = _sample_in(anat, lungs, anat.top + 0.25, anat.dia_r - 0.02)
    ry, rx = rng.uniform(0.06, 0.11), rng.uniform(0.05, 0.09)
    e = ((anat.y - cy) / ry) ** 2 + ((anat.x - cx) / rx) ** 2
    noise = _smooth_noise(rng, anat.shape, 14)
    region = anat.soft(((1.0 - e) * 0.05 + 0.02 * noise).astype(np.float32), 4) * lungs
    fluffy = 0.7 + 0.3 * _smooth_noise(rng, anat.shape, 40)
    density += rng.uniform(0.16, 0.24) * region * fluffy
    return np.asarray(region > 0.5)


def _tb(anat: _Anatomy, lungs: Array, density: Array) -> NDArray[np.bool_]:
    rng = anat.rng
    side = -1 if rng.random() < 0.6 else 1  # right upper lobe most often
    lung = anat.lung(side) * lungs
    upper = anat.top + 0.2
    cy, cx = _sample_in(anat, lung, anat.top + 0.05, upper)
    e = ((anat.y - cy) / 0.09) ** 2 + ((anat.x - cx) / 0.08) ** 2
    patches = _smooth_noise(rng, anat.shape, 30)
    infil = anat.soft(((1 - e) * 0.04 + 0.03 * patches - 0.005).astype(np.float32), 3) * lung
    density += 0.15 * infil * (0.6 + 0.4 * _smooth_noise(rng, anat.shape, 60))
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


def _effusion(anat: _Anatomy, lungs: Array, density: Array) -> NDArray[np.bool_]:
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


_FINDING_FNS: dict[str, Callable[[_Anatomy, Array, Array], NDArray[np.bool_]]] = {
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
        The image in display density (MONOCHROME2, 0-1), the union mask and labels.
    """
    body_rng = np.random.default_rng([seed, index if patient is None else patient, 7])
    sex = "female" if body_rng.random() < 0.5 else "male"
    age = int(body_rng.integers(15, 86))
    # Anatomy and findings are smooth: compose them at <= _WORK_PX and upsample, then add
    # full-resolution noise. This keeps 1024 px and 3000 x 2500 images fast.
    scale = min(1.0, _WORK_PX / max(shape))
    work = (max(64, round(shape[0] * scale)), max(64, round(shape[1] * scale)))
    anat = _Anatomy(body_rng, work, sex)
    density, lungs, _ = _compose(anat)
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
    mask = np.zeros(work, dtype=bool)
    for name in sorted(findings):
        mask |= _FINDING_FNS[name](anat, lungs, density)
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
    )


_CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
_DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def write_dicom(
    case: SyntheticCase,
    path: Path,
    *,
    seed: int,
    index: int,
    patient_id: str,
    site: str,
    modality: str | None = None,
    photometric: str | None = None,
    bits_stored: int | None = None,
) -> None:
    """Write a case as a DICOM CR or DX image with synthetic patient and study attributes.

    Args:
        case: the rendered case.
        path: output file.
        seed: data set seed (UIDs and attributes are derived from ``(seed, index)``).
        index: image number.
        patient_id: synthetic patient identifier.
        site: synthetic site, written as the institution name.
        modality: "CR" or "DX"; drawn when ``None``.
        photometric: "MONOCHROME1" or "MONOCHROME2"; drawn when ``None``.
        bits_stored: 12-16; drawn when ``None``.
    """
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng([seed, index, 11])
    modality = modality or str(case.attrs.get("modality", "CR"))
    if modality not in {"CR", "DX"}:
        raise ValueError(f"modality {modality!r}: use CR or DX")
    photometric = photometric or ("MONOCHROME1" if rng.random() < 0.35 else "MONOCHROME2")
    bits = bits_stored or int(rng.choice([12, 14, 16]))
    if not 12 <= bits <= 16:
        raise ValueError(f"bits_stored {bits}: use 12-16")
    maxval = (1 << bits) - 1
    # Detectors rarely use their full range: a pedestal and a gain that vary per image.
    lo = rng.uniform(0.02, 0.12) * maxval
    hi = rng.uniform(0.8, 0.98) * maxval
    values = lo + case.image * (hi - lo)
    if photometric == "MONOCHROME1":
        values = maxval - values
    pixels = np.clip(np.rint(values), 0, maxval).astype(np.uint16)
    slope, intercept = (1.0, 0.0) if rng.random() < 0.7 else (0.5, float(rng.integers(0, 200)))
    out = pixels.astype(np.float64) * slope + intercept
    # Headroom on the dense side (high values in MONOCHROME2, low in MONOCHROME1) keeps
    # bone and heart below white; the air side is windowed tightly.
    if photometric == "MONOCHROME1":
        p_lo, p_hi = np.percentile(out[::4, ::4], [0.1, 99.5])
        p_lo -= 0.25 * (p_hi - p_lo)
    else:
        p_lo, p_hi = np.percentile(out[::4, ::4], [0.5, 99.9])
        p_hi += 0.25 * (p_hi - p_lo)

    def uid(kind: str) -> str:
        return str(generate_uid(entropy_srcs=["tonle-synthetic-cxr", str(seed), str(index), kind]))

    rows, cols = pixels.shape
    spacing = FIELD_HEIGHT_MM / rows
    study_day = date(2024, 1, 1) + timedelta(days=int(rng.integers(0, 700)))
    birth = study_day - timedelta(days=int(case.age * 365.25 + rng.integers(0, 365)))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_CR_STORAGE if modality == "CR" else _DX_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(uid("sop"))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.StudyID = f"S{index:06d}"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.AccessionNumber = f"SYN{seed:03d}{index:07d}"[-16:]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_day.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = (
        f"{int(rng.integers(7, 18)):02d}{int(rng.integers(0, 60)):02d}00"
    )
    ds.Modality = modality
    ds.Manufacturer = "Tonle synthetic radiograph generator"
    ds.InstitutionName = site
    ds.PatientName = f"SYNTHETIC^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = "F" if case.sex == "female" else "M"
    ds.PatientAge = f"{case.age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA" if rng.random() < 0.8 else "AP"
    ds.PatientOrientation = ["L", "F"]  # rows run to the patient's left, columns to the feet
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
    ds.PixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    # Some CR readers ship a non-linear VOI LUT instead of a window (US LUT data must
    # stay under 64 KB, and its first value is unsigned: only for ranges that fit).
    if rng.random() < 0.15 and p_lo >= 0 and p_hi - p_lo < 32000:
        _add_voi_lut(ds, float(p_lo), float(p_hi), float(rng.uniform(0.8, 1.25)))
    else:
        ds.WindowCenter = f"{(p_lo + p_hi) / 2:.1f}"
        ds.WindowWidth = f"{max(p_hi - p_lo, 1.0):.1f}"
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _add_voi_lut(ds: Any, lo: float, hi: float, gamma: float) -> None:
    """A 12-bit VOI LUT (gamma curve) over the rescaled range [lo, hi]."""
    from pydicom import Dataset
    from pydicom.sequence import Sequence

    first = int(np.floor(lo))
    entries = int(min(32000, max(2, np.ceil(hi) - first + 1)))
    x = np.arange(entries, dtype=np.float64) / (entries - 1)
    table = np.rint(np.clip(x, 0, 1) ** gamma * 4095).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [entries, first, 12]
    item.add_new(0x00283006, "US", table.tolist())  # LUTData
    item.LUTExplanation = f"synthetic gamma {gamma:.2f}"
    ds.VOILUTSequence = Sequence([item])


def generate(
    out_dir: Path,
    n: int,
    seed: int,
    size: int | tuple[int, int] = 512,
    *,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``n`` synthetic radiographs as DICOM, their masks and ``labels.csv``.

    About one image in seven is a follow-up of the previous patient (same person,
    anatomy, sex and age band), so patient-level splits matter.

    Args:
        out_dir: output folder (created); files go to ``images/`` and ``masks/``.
        n: number of images (>= 1).
        seed: data set seed; the same seed gives the same data set.
        size: square side, or (rows, columns), in pixels.
        progress: called with 1 after each image (for progress bars).

    Returns:
        Path of ``labels.csv`` (columns :data:`LABEL_COLUMNS`; paths relative to it).
    """
    if n < 1:
        raise ValueError(f"n={n}: must be at least 1")
    shape = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = np.random.default_rng([seed, 99])
    labels_path = out_dir / "labels.csv"
    patient_no = -1
    with labels_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(LABEL_COLUMNS))
        writer.writeheader()
        for i in range(n):
            follow_up = i > 0 and plan.random() < 1 / 7
            if not follow_up:
                patient_no += 1
            patient_id = f"SYN-{seed:03d}-{patient_no:06d}"
            site = SITES[int(np.random.default_rng([seed, patient_no, 5]).integers(len(SITES)))]
            case = render_case(seed, i, shape, patient=patient_no)
            image_rel = f"images/{i:06d}.dcm"
            write_dicom(
                case, out_dir / image_rel, seed=seed, index=i, patient_id=patient_id, site=site
            )
            mask_rel = ""
            if case.mask.any():
                mask_rel = f"masks/{i:06d}.png"
                (out_dir / "masks").mkdir(exist_ok=True)
                Image.fromarray(case.mask.astype(np.uint8) * 255).save(out_dir / mask_rel)
            writer.writerow(
                {
                    "image": image_rel,
                    "patient_id": patient_id,
                    "sex": case.sex,
                    "age": case.age,
                    "site": site,
                    "abnormal": int(any(case.findings.values())),
                    **{k: int(v) for k, v in case.findings.items()},
                    "mask": mask_rel,
                }
            )
            if progress is not None:
                progress(1)
    logger.info("wrote %d synthetic radiographs to %s", n, out_dir)
    return labels_path
