"""The reader's copy of a radiograph: its own values, block-summed, as uint16.

The model input is windowed to [0, 1] and small. A clinician's reader windows the
image itself, so it needs the values before any window: this module turns the stored
pixels the decoder already holds (a zero-copy view of uncompressed DICOM, the pixels of
a reduced JPEG 2000 decode, the PNG Pillow loaded) into a copy whose short side is
still >= the asked size, by summing ``k x k`` blocks in integers (exact, no float, no
resampler), and gives the window the decoder would apply in the same units.

Values are MONOCHROME2 (white = dense). They are the block sums shifted to start at 0
(and shifted right only when their range needs more than 16 bits), so a 12-bit image
summed over 4 x 4 blocks keeps 16 bits of grey where an 8-bit copy kept 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DISPLAY_LONGEST",
    "DisplayValues",
    "block_sum",
    "display_factor",
    "display_values",
    "from_sums",
    "window_sample",
]

DISPLAY_LONGEST = 1024  # the display copy's long side is at most this, pixels
PERCENTILE_SAMPLE = 1 << 16  # the default window is read off about this many values


@dataclass(frozen=True)
class DisplayValues:
    """A radiograph's values for the reader (uint16, white = dense) and its default window.

    Attributes:
        values: 2-D uint16.
        center: the default window's centre, in the units of ``values``.
        width: the default window's width (> 0), in the units of ``values``.
    """

    values: NDArray[np.uint16]
    center: float
    width: float


def display_factor(rows: int, columns: int, short_side: int) -> int:
    """The block size ``k`` keeping the short side >= ``short_side`` where the long side
    stays <= :data:`DISPLAY_LONGEST` (the long side wins when both cannot hold)."""
    k = max(1, min(rows, columns) // max(1, short_side))
    k = max(k, -(-max(rows, columns) // DISPLAY_LONGEST))
    return max(1, min(k, rows, columns))  # a sliver keeps one row or column


def block_sum(a: NDArray[Any], k: int, bits: int | None = None) -> NDArray[Any]:
    """Exact integer sums of ``k x k`` blocks (the edge remainder is dropped).

    Each stage sums in the narrowest type that holds its sums (``bits`` stored bits,
    else the largest value, bound them): the k rows of a block, then its k columns, each
    in uint16, (u)int32, else (u)int64.
    """
    if a.dtype.kind not in "ui":
        raise ValueError(f"block_sum needs integers, got {a.dtype}")
    r, c = a.shape[0] // k, a.shape[1] // k
    view = a[: r * k, : c * k]
    if k == 1:
        return view
    signed = a.dtype.kind == "i"
    if bits:
        top = (1 << bits) - 1
    elif not view.size:
        top = 0
    else:  # one pass over the values (two if signed)
        top = max(abs(int(view.min())), int(view.max())) if signed else int(view.max())
    # The k rows of each block in one reduction (10-40 % less CPU than k strided adds),
    # in 16 bits where they fit (14 stored bits summed 4 x 4: 1.8 CPU-ms against 3.1
    # for a 3000 x 2500 image with one 32-bit accumulator for both stages).
    rows: NDArray[Any] = view.reshape(r, k, c * k).sum(axis=1, dtype=_accumulator(top * k, signed))
    out = rows[:, 0::k].astype(_accumulator(top * k * k, signed))
    for j in range(1, k):
        out += rows[:, j::k]
    return out


def _accumulator(top: int, signed: bool) -> Any:
    """The narrowest integer type holding sums of magnitude up to ``top``."""
    if not signed and top <= 0xFFFF:
        return np.uint16
    if top < 1 << 31:
        return np.int32 if signed else np.uint32
    return np.int64 if signed else np.uint64


def display_values(
    stored: NDArray[Any],
    k: int,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    invert: bool = False,
    bits: int | None = None,
) -> DisplayValues:
    """The reader's copy of ``stored`` summed over ``k x k`` blocks.

    Args:
        stored: 2-D integer pixels as stored (before rescale or window).
        k: block size (:func:`display_factor`).
        slope: the modality rescale slope (window units are rescaled values).
        intercept: the modality rescale intercept.
        window: the decoder's linear window (centre, width) in rescaled values; None:
            the 0.5-99.5th percentiles of the copy (as the decoder's percentile window).
        invert: MONOCHROME1 (white = low values): flipped so that white = dense.
        bits: unsigned values use no more than this many bits (DICOM BitsStored).
    """
    sums = block_sum(stored, k, bits if stored.dtype.kind == "u" else None)
    return from_sums(sums, k * k, slope=slope, intercept=intercept, window=window, invert=invert)


def from_sums(
    sums: NDArray[Any],
    count: int,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    invert: bool = False,
) -> DisplayValues:
    """:func:`display_values` of block sums of ``count`` stored pixels each.

    A range wider than 16 bits is shifted right until it fits (15-16 bits of grey kept;
    an integer shift, not a float scale: 0.25 against 0.7 CPU-ms for a 750 x 625 copy).
    """
    low, high = int(sums.min()), int(sums.max())
    shift = max(0, (high - low).bit_length() - 16)
    shifted = (high - sums) if invert else (sums - low)  # a new array, >= 0
    if shift:
        shifted >>= shift
    values = shifted.astype(np.uint16, copy=False)
    gain = 1.0 / (1 << shift)
    if window is not None and window[1] > 0 and slope != 0:
        center, width = window
        sum_center = (center - intercept) / slope * count
        shown = (high - sum_center) if invert else (sum_center - low)
        return DisplayValues(values, shown * gain, abs(width / slope) * count * gain)
    lo, hi = _percentiles(values)
    return DisplayValues(values, (lo + hi) / 2, max(1.0, hi - lo))


def window_sample(values: NDArray[np.uint16]) -> NDArray[np.uint16]:
    """At most about :data:`PERCENTILE_SAMPLE` of ``values``, on a regular grid: what the
    default window is read off."""
    step = math.isqrt(max(0, values.size - 1) // PERCENTILE_SAMPLE) + 1
    return values[::step, ::step]


def _percentiles(values: NDArray[np.uint16]) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles (the lowest values with at least 0.5 % and
    99.5 % of the values at or below them) of at most about :data:`PERCENTILE_SAMPLE`
    of ``values`` on a regular grid: the default window of the reader, not an exact
    statistic (every value of a 750 x 625 copy cost 0.7 CPU-ms of a read).

    Read off the sample's counts per value (uint16: at most 65,536 of them), the same
    order statistics as a sort gives: on a 2 GHz AMD EPYC with AVX2, 0.37 against 0.86
    CPU-ms for a 512 x 512 copy's sample and 0.49 against 0.73 for a 3000 x 2500
    radiograph's (numpy's radix sort, ``kind="stable"``; its default sort is fast only
    with AVX-512)."""
    sample = window_sample(values)
    below = np.cumsum(np.bincount(sample.ravel()))  # values <= v, for each v
    lo, hi = (max(0, math.ceil(share * sample.size) - 1) for share in (0.005, 0.995))
    # The lowest v with more than `rank` values at or below it is the rank-th in order.
    first, last = np.searchsorted(below, [lo, hi], side="right")
    return float(first), float(last)
