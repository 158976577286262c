"""Heatmap overlays: a class activation map blended over the analysed image, as PNG.

A stored result keeps a :class:`HeatmapSource` (the analysed image as 8-bit grey plus
the shown map scaled to 0-1 as float16, ~50 kB at 224 px, encoded in microseconds) and
the PNGs are drawn from it on each GET: encoding the overlay and the plain image costs
~4-5 ms of CPU (zlib), the largest stage after decoding, and most results are never
opened.
"""

from __future__ import annotations

import io
import struct
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


_HEADER = struct.Struct("<HHHH")  # image rows, columns; map rows, columns


@dataclass(frozen=True)
class HeatmapSource:
    """What the overlay and the plain image are drawn from.

    Attributes:
        image: the analysed image, 2-D uint8 (min-max scaled, white = dense).
        cam: the activation map shown, 2-D float32 at the model's map size, scaled to
            0-1 (the overlay min-max scales it again after the bilinear resize, which
            commutes with that scaling, so the drawing is unchanged).
    """

    image: np.ndarray
    cam: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray, cam: np.ndarray) -> HeatmapSource:
        """From the model input ``[S, S]`` (any range) and one raw map ``[h, w]``."""
        cam = np.asarray(cam, dtype=np.float32)
        low = float(cam.min())
        span = float(cam.max()) - low
        scaled = (cam - low) / span if span > 1e-12 else np.zeros_like(cam)
        return cls(_grey_u8(image), np.ascontiguousarray(scaled, dtype=np.float32))

    def encode(self) -> bytes:
        """Compact bytes: four little-endian uint16 sizes, the image, the map as float16."""
        rows, columns = self.image.shape
        map_rows, map_columns = self.cam.shape
        header = _HEADER.pack(rows, columns, map_rows, map_columns)
        cam = self.cam.astype("<f2").tobytes()
        return header + np.ascontiguousarray(self.image, dtype=np.uint8).tobytes() + cam

    @classmethod
    def decode(cls, data: bytes) -> HeatmapSource:
        """The inverse of :meth:`encode`.

        Raises:
            ValueError: the bytes are not an encoded source.
        """
        if len(data) < _HEADER.size:
            raise ValueError(f"a heatmap source needs {_HEADER.size}+ bytes, got {len(data)}")
        rows, columns, map_rows, map_columns = _HEADER.unpack_from(data)
        pixels = rows * columns
        expected = _HEADER.size + pixels + 2 * map_rows * map_columns
        if len(data) != expected or not pixels or not map_rows * map_columns:
            raise ValueError(
                f"heatmap source of {len(data)} bytes; its header ({rows}x{columns} image, "
                f"{map_rows}x{map_columns} map) needs {expected}"
            )
        image = np.frombuffer(data, np.uint8, pixels, _HEADER.size).reshape(rows, columns)
        cam = np.frombuffer(data, "<f2", offset=_HEADER.size + pixels)
        return cls(image, cam.reshape(map_rows, map_columns).astype(np.float32))

    def overlay_png(self) -> bytes:
        """The overlay PNG (see :func:`overlay_png`)."""
        return overlay_png(self.image, self.cam)

    def image_png(self) -> bytes:
        """The plain analysed image as an 8-bit PNG."""
        return _png(self.image)
