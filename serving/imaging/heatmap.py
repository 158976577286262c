"""Heatmap overlays: a class activation map blended over the analysed image, as PNG.

A result stores a :class:`HeatmapSource` (the analysed image as 8-bit grey plus one
raw map, ~50 kB, written in ~0.2 ms) and the PNGs are drawn on first read: encoding
the overlay and the plain image cost ~4-5 ms of CPU per request here (zlib), the
largest stage after decoding, and most results are never opened.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["HeatmapSource", "grey_png", "overlay_png", "upsample_cam"]


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
    return _png((rgb * 255).astype(np.uint8))


def _grey_u8(image: np.ndarray) -> np.ndarray:
    low = float(image.min())
    span = float(image.max()) - low
    grey = (image - low) / span if span > 1e-12 else np.zeros_like(image)
    return (grey * 255).astype(np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def grey_png(image: np.ndarray) -> bytes:
    """The analysed image alone (min-max scaled, white = dense) as an 8-bit PNG."""
    return _png(_grey_u8(image))


@dataclass(frozen=True)
class HeatmapSource:
    """What the overlay and the plain image are drawn from.

    Attributes:
        image: the analysed image, 2-D uint8 (min-max scaled, white = dense).
        cam: the raw activation map shown, 2-D float32 at the model's map size.
    """

    image: np.ndarray
    cam: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray, cam: np.ndarray) -> HeatmapSource:
        """From the model input ``[S, S]`` (any range) and one raw map ``[h, w]``."""
        return cls(_grey_u8(image), np.ascontiguousarray(cam, dtype=np.float32))

    def encode(self) -> bytes:
        """Bytes for the result store (an uncompressed ``.npz``, no pickles)."""
        buffer = io.BytesIO()
        np.savez(buffer, image=self.image, cam=self.cam)
        return buffer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> HeatmapSource:
        """The inverse of :meth:`encode`.

        Raises:
            ValueError: the bytes are not an encoded source.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                image, cam = arrays["image"], arrays["cam"]
        except (OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError("not an encoded heatmap source") from exc
        if image.ndim != 2 or image.dtype != np.uint8 or cam.ndim != 2:
            raise ValueError(
                f"heatmap source has image {image.shape} {image.dtype}, cam {cam.shape}"
            )
        return cls(image, cam.astype(np.float32, copy=False))

    def overlay_png(self) -> bytes:
        """The overlay PNG (see :func:`overlay_png`)."""
        return overlay_png(self.image, self.cam)

    def image_png(self) -> bytes:
        """The plain analysed image as an 8-bit PNG."""
        return _png(self.image)
