"""Heatmap overlays: a class activation map blended over the analysed image, as PNG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["grey_png", "overlay_png", "upsample_cam"]


def _colour_lut() -> np.ndarray:
    """A 256-entry blue -> cyan -> yellow -> red ramp (uint8 RGB)."""
    x = np.linspace(0.0, 1.0, 256)
    red = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return (np.stack([red, green, blue], axis=1) * 255).astype(np.uint8)


_LUT = _colour_lut()


def upsample_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a raw 2-D activation map to ``size`` (height, width), then 0-1.

    Higher stays higher: the map is shifted by its minimum and divided by its range,
    never inverted. A flat map becomes all zeros.
    """
    image = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32))
    resized = np.asarray(
        image.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32
    )
    low = float(resized.min())
    span = float(resized.max()) - low
    if span <= 1e-12:
        return np.zeros(size, dtype=np.float32)
    return (resized - low) / span


def overlay_png(image: np.ndarray, cam: np.ndarray, *, floor: float = 0.35) -> bytes:
    """Blend ``cam`` in colour over a grey ``image`` and encode it as PNG.

    Args:
        image: 2-D float array (any range; shown min-max scaled, white = dense).
        cam: 2-D raw activation map of any lower resolution.
        floor: scaled activation below which the image is shown without colour.

    Returns:
        PNG bytes, RGB, the size of ``image``.
    """
    low = float(image.min())
    span = float(image.max()) - low
    grey = (image - low) / span if span > 1e-12 else np.zeros_like(image)
    heat = upsample_cam(cam, (image.shape[0], image.shape[1]))
    colours = _LUT[(heat * 255).astype(np.uint8)].astype(np.float32) / 255.0
    alpha = np.where(heat >= floor, 0.25 + 0.35 * heat, 0.0)[..., None]
    rgb = grey[..., None] * (1.0 - alpha) + colours * alpha
    out = Image.fromarray((rgb * 255).astype(np.uint8))
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def grey_png(image: np.ndarray) -> bytes:
    """The analysed image alone (min-max scaled, white = dense) as an 8-bit PNG."""
    low = float(image.min())
    span = float(image.max()) - low
    grey = (image - low) / span if span > 1e-12 else np.zeros_like(image)
    buffer = io.BytesIO()
    Image.fromarray((grey * 255).astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
