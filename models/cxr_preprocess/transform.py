"""Pixel transforms shared by the decoders and the model input: area resize, windows."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.cxr_preprocess.display import block_sum
from models.cxr_preprocess.image import Array, DecodedImage, ImageError
from models.metadata import ImageSpec

__all__ = [
    "NORMALISATION",
    "area_resize",
    "block_mean",
    "image_spec",
    "percentile_window",
    "to_model_input",
]

NORMALISATION = (
    "models.cxr_preprocess: rescale, VOI LUT / first window (else 0.5-99.5th percentile), "
    "MONOCHROME1 inverted; area downsample to SxS (aspect not kept); values in [0, 1], "
    "white = dense"
)


def image_spec(size: int) -> ImageSpec:
    """The :class:`ImageSpec` describing :func:`to_model_input` at ``size``."""
    return ImageSpec(size=size, channels=1, photometric="MONOCHROME2", normalisation=NORMALISATION)


def block_mean(a: NDArray[Any], k: int) -> Array:
    """Average ``k x k`` blocks (the edge remainder is dropped). Integers are summed
    exactly (:func:`block_sum`, bound by their largest value: a decoder's values may
    exceed the bits their header declares), then divided."""
    if k <= 1:
        return np.asarray(a, dtype=np.float32)
    if a.dtype.kind == "f":  # float32 sums are exact enough for <= 64 x 64 blocks of [0, 1]
        r, c = a.shape[0] // k, a.shape[1] // k
        rows = a[: r * k, : c * k].reshape(r, k, c * k).sum(axis=1, dtype=np.float32)
        return np.asarray(rows.reshape(r, c, k).sum(axis=2) / float(k * k), dtype=np.float32)
    return np.asarray(block_sum(a, k) / float(k * k), dtype=np.float32)


def _area_weights(n_in: int, n_out: int) -> Array:
    """Matrix [n_out, n_in] averaging input cells over each output cell's extent."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return np.asarray(overlap / overlap.sum(axis=1, keepdims=True), dtype=np.float32)


def area_resize(img: NDArray[Any], shape: tuple[int, int]) -> Array:
    """Area-average ``img`` to ``shape`` (any ratio): an integer block mean first, then
    exact area weights, so a 3000 x 2500 image costs about 10 ms."""
    if img.ndim != 2 or min(img.shape) < 1:
        raise ImageError("unreadable", f"expected a 2-D image, got shape {img.shape}")
    k = max(1, min(img.shape[0] // shape[0], img.shape[1] // shape[1]))
    small = block_mean(img, k)
    if small.shape == shape:
        return small
    return _resize_axis0(_resize_axis0(small, shape[0]).T, shape[1]).T.copy()


def _resize_axis0(img: Array, n_out: int) -> Array:
    """Area-resize along axis 0 with a banded gather (no BLAS: it is tiny work, and
    threaded BLAS on a busy 2-core host cost 100 ms for a 224 x 272 product)."""
    n_in = img.shape[0]
    if n_in == n_out:
        return img
    idx, band = _band(n_in, n_out)
    out = np.zeros((n_out, *img.shape[1:]), dtype=np.float32)
    for t in range(idx.shape[1]):
        out += band[:, t, None] * img[idx[:, t]]
    return out


@functools.lru_cache(maxsize=64)
def _band(n_in: int, n_out: int) -> tuple[NDArray[np.intp], Array]:
    """Input rows and weights ``[n_out, width]`` of each output row (read-only; cached:
    the same few sizes recur, and building them cost as much as the resize)."""
    weights = _area_weights(n_in, n_out)
    nonzero = weights > 0
    first = nonzero.argmax(axis=1)
    width = int((nonzero.sum(axis=1)).max())
    idx = np.minimum(first[:, None] + np.arange(width)[None, :], n_in - 1)
    band = np.take_along_axis(weights, idx, axis=1)
    band[first[:, None] + np.arange(width)[None, :] >= n_in] = 0.0
    idx.flags.writeable = False
    band.flags.writeable = False
    return idx, band


def percentile_window(values: NDArray[Any]) -> Array:
    """Map the 0.5-99.5th percentiles to [0, 1] (clipped), in one float32 copy."""
    lo, hi = np.percentile(values, [0.5, 99.5])
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.float32)
    out = np.array(values, dtype=np.float32)
    out -= np.float32(lo)
    out /= np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def to_model_input(img: DecodedImage, size: int = 224) -> Array:
    """The network input: float32 ``[1, size, size]`` in [0, 1], white = dense.

    Raises:
        ImageError: ``unreadable`` if the pixels are not a finite 2-D image.
    """
    pixels = img.pixels
    if pixels.ndim != 2 or not np.isfinite(pixels).all():
        raise ImageError("unreadable", "pixels are not a finite 2-D image")
    out = area_resize(pixels, (size, size))
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)[None]
