"""Normal chest anatomy for the synthetic radiographs, in display density.

Trunk, shoulders and arms, lung fields, heart and mediastinum, trachea, spine, ribs,
clavicles, hila with vascular markings, breast shadows and the gastric bubble, composed
from vectorised shapes on a normalised grid (see :mod:`training.cxr_synthetic`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["Anatomy", "Array", "compose", "smooth_noise"]

Array = NDArray[np.float32]


def _f32(a: NDArray[Any]) -> Array:
    return np.asarray(a, dtype=np.float32)


def _sigmoid(z: NDArray[Any]) -> Array:
    return _f32(0.5 + 0.5 * np.tanh(0.5 * z))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> Array:
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


class Anatomy:
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


def compose(anat: Anatomy) -> tuple[Array, Array, Array]:
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
    density += 0.02 * smooth_noise(rng, anat.shape, 50) * lungs
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
