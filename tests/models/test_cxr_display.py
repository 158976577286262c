"""The reader's copy of a radiograph (models.cxr_preprocess.display): exact block sums,
the block size and the default window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.cxr_preprocess.display import (
    PERCENTILE_SAMPLE,
    block_sum,
    display_factor,
    display_values,
    window_sample,
)
from models.cxr_preprocess.transform import block_mean


@pytest.mark.parametrize(
    ("dtype", "low", "high", "bits"),
    [
        (np.uint16, 0, 4096, 12),  # 12-bit CR: uint16 sums up to 4 x 4
        (np.uint16, 0, 16384, 14),  # 14-bit DX: uint16 row sums up to 4 rows
        (np.uint16, 0, 65536, 16),  # full 16 bits: uint32 sums
        (np.uint16, 0, 65536, None),  # bits unknown: bound by the largest value
        (np.int16, -32768, 32768, None),  # signed, the extreme negative included
        (np.uint8, 0, 256, 8),
        (np.int32, -(2**31), 2**31 - 1, None),  # int64 sums
    ],
)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_block_sums_are_exact(dtype: type, low: int, high: int, bits: int | None, k: int) -> None:
    values = _random_values(dtype, low, high, seed=k)
    assert np.array_equal(block_sum(values, k, bits).astype(np.int64), _exact_sums(values, k))


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [(np.uint16, 0, 4096), (np.uint16, 0, 65536), (np.int16, -32768, 32768), (np.uint8, 0, 256)],
)
@pytest.mark.parametrize("k", [2, 4, 11])
def test_block_means_of_integers_are_exact(dtype: type, low: int, high: int, k: int) -> None:
    """The model input's reduction (``block_mean``) sums stored integers exactly, in
    the narrowest type their largest value allows, then divides once."""
    values = _random_values(dtype, low, high, seed=k)
    expected = np.asarray(_exact_sums(values, k) / float(k * k), dtype=np.float32)
    assert np.array_equal(block_mean(values, k), expected)


def _random_values(dtype: type, low: int, high: int, seed: int) -> np.ndarray:
    """103 x 97 random values in [low, high) with both extremes, where a narrow
    accumulator would wrap."""
    values = np.random.default_rng(seed).integers(low, high, size=(103, 97)).astype(dtype)
    values.flat[0] = low
    values.flat[-1] = high - 1
    return values


def _exact_sums(values: np.ndarray, k: int) -> np.ndarray:
    """The ``k x k`` block sums of ``values`` in int64 (the edge remainder dropped)."""
    rows, columns = values.shape[0] // k, values.shape[1] // k
    blocks = values[: rows * k, : columns * k].astype(np.int64)
    return blocks.reshape(rows, k, columns, k).sum(axis=(1, 3))


def test_block_sum_refuses_floats() -> None:
    with pytest.raises(ValueError, match="integers"):
        block_sum(np.zeros((4, 4), np.float32), 2)


@pytest.mark.parametrize(
    ("rows", "columns", "k"),
    [(512, 512, 1), (3000, 2500, 4), (2400, 1200, 3), (300, 200, 1), (6000, 100, 6)],
)
def test_display_factor(rows: int, columns: int, k: int) -> None:
    assert display_factor(rows, columns, 512) == k
    assert max(rows, columns) // k <= 1024


def test_a_sliver_keeps_one_row() -> None:
    """A hostile 6000 x 3 image: the copy is never empty (the quality gate refuses it
    later, with a reason, not a crash in the decoder)."""
    k = display_factor(6000, 3, 512)
    assert k == 3
    shown = display_values(np.ones((6000, 3), np.uint16), k)
    assert shown.values.shape == (2000, 1)


def test_a_wide_range_is_shifted_into_16_bits_with_its_window() -> None:
    stored = np.array([[0, 100_000], [200_000, 300_000]], dtype=np.int32)  # 19 bits
    shown = display_values(stored, 1, window=(150_000.0, 100_000.0))
    assert shown.values.tolist() == [[0, 100_000 >> 3], [200_000 >> 3, 300_000 >> 3]]
    assert shown.center == pytest.approx(150_000 / 8)
    assert shown.width == pytest.approx(100_000 / 8)
    assert int(shown.values.max()) >= 1 << 15  # at least 15 of the 16 bits used


def test_rescale_and_inversion_move_the_window_with_the_values() -> None:
    stored = np.arange(16, dtype=np.uint16).reshape(4, 4) * 100  # 0..1500
    # Rescaled values are 2 * stored - 1000; the window is given in those.
    shown = display_values(
        stored, 2, slope=2.0, intercept=-1000.0, window=(500.0, 400.0), invert=True
    )
    sums = stored.astype(np.int64).reshape(2, 2, 2, 2).sum(axis=(1, 3))
    assert np.array_equal(shown.values, sums.max() - sums)
    center_in_sums = (500.0 + 1000.0) / 2.0 * 4  # stored 750, summed over 4 pixels
    assert shown.center == pytest.approx(sums.max() - center_in_sums)
    assert shown.width == pytest.approx(400.0 / 2.0 * 4)


def test_without_a_window_the_percentiles_are_used() -> None:
    stored = np.arange(1000, dtype=np.uint16).reshape(25, 40)
    shown = display_values(stored, 1)
    assert shown.center == pytest.approx(499.5, abs=1)
    assert shown.width == pytest.approx(990, abs=2)
    flat = display_values(np.full((4, 4), 7, np.uint16), 1)
    assert flat.width >= 1


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).integers(0, 65536, (700, 600)),  # every bit, a large copy
        np.random.default_rng(2).integers(0, 4096, (300, 200)),  # 12 bits, under the sample
        np.random.default_rng(3).geometric(0.3, (400, 400)),  # few values, long ties
        np.r_[np.zeros(990), np.full(10, 65535)].reshape(40, 25),  # two values at the ends
        np.full((1, 1), 9),
    ],
)
def test_the_default_window_is_the_order_statistics_of_its_sample(values: np.ndarray) -> None:
    """The window is read off the sample's counts per value; it is the same pair of
    order statistics (the ceil(p n)-th smallest) a sort of that sample gives."""
    shown = display_values(values.astype(np.uint16), 1)
    ordered = np.sort(window_sample(shown.values), axis=None)
    lo, hi = (max(0, -(-ordered.size * share // 1000) - 1) for share in (5, 995))
    assert shown.center == (float(ordered[lo]) + float(ordered[hi])) / 2
    assert shown.width == max(1.0, float(ordered[hi]) - float(ordered[lo]))


@pytest.mark.parametrize("shape", [(512, 512), (750, 625), (1024, 853)])
def test_the_default_window_of_a_large_copy_is_read_off_a_sample(shape: tuple[int, int]) -> None:
    """Above PERCENTILE_SAMPLE values the percentiles come from a regular grid of them:
    on a synthetic chest radiograph with noise, within 0.5 % of the range of the exact
    0.5-99.5th percentiles of every value."""
    from training.cxr_synthetic import render_case

    image = render_case(3, 0, shape, findings=["effusion"]).image
    noise = np.random.default_rng(0).normal(0, 0.01, shape)
    stored = (np.clip(image + noise, 0, 1) * 4095).astype(np.uint16)
    assert stored.size > PERCENTILE_SAMPLE
    shown = display_values(stored, 1, bits=12)
    lo, hi = np.percentile(shown.values, [0.5, 99.5])
    tolerance = 0.005 * (int(shown.values.max()) - int(shown.values.min()))
    assert shown.center == pytest.approx((lo + hi) / 2, abs=tolerance)
    assert shown.width == pytest.approx(hi - lo, abs=2 * tolerance)


def test_the_copy_of_a_real_radiograph_shows_the_image_at_its_header_window() -> None:
    """RG1 of ``pydicom-data``: a real CR chest PA (MONOCHROME1, 15 stored bits, header
    window 15000 / 30000) summed over 3 x 3 blocks, a range wider than 16 bits and so
    shifted into 16. Windowed as the reader windows it, every pixel of the copy is the
    exact block mean's grey (flipped: white = dense) within 1/100 of an 8-bit level."""
    import pydicom
    from pydicom.data import get_testdata_file

    from models.cxr_preprocess import decode_dicom

    found = get_testdata_file("RG1_UNCI.dcm", download=False)
    assert found is not None, "RG1_UNCI.dcm is not installed: pip install pydicom-data"
    data = Path(str(found)).read_bytes()
    shown = decode_dicom(data, target_size=224, display_size=512).display
    assert shown is not None
    header = pydicom.dcmread(str(found))
    assert header.PhotometricInterpretation == "MONOCHROME1"
    center, width = float(header.WindowCenter), float(header.WindowWidth)
    stored = header.pixel_array
    k = stored.shape[0] // shown.values.shape[0]
    assert k == 3
    assert int(shown.values.max()) >= 1 << 15  # 15-16 bits of grey kept
    mean = _exact_sums(stored, k) / (k * k)
    expected = np.clip((center - mean) / width + 0.5, 0, 1)
    grey = np.clip((shown.values - shown.center) / shown.width + 0.5, 0, 1)
    assert np.abs(grey - expected).max() * 255 < 1 / 100


def test_a_jpeg_2000_copy_is_bound_by_its_values_not_by_the_header() -> None:
    """A JPEG 2000 codestream of 16-bit values under a header claiming BitsStored 12
    (our reduced JPEG 2000 decode keeps the codestream's precision): the copy of this
    600 x 2400 image, summed 3 x 3, is still exact. Bound by the header's 12 bits, its
    rows were summed in 16-bit integers and wrapped."""
    import io

    import pydicom

    from models.cxr_preprocess import decode_dicom
    from tests.serving.imaging.cxr_fixtures import dicom_bytes
    from training.cxr_synthetic_dicom import jpeg2000_lossless

    yy, xx = np.mgrid[0:600, 0:2400]
    image = (40_000 + 25_000 * np.sin(xx / 300) * np.cos(yy / 200) ** 2).astype(np.uint16)
    header = pydicom.dcmread(io.BytesIO(jpeg2000_lossless(dicom_bytes(image))))
    header.BitsStored, header.HighBit = 12, 11
    out = io.BytesIO()
    header.save_as(out, enforce_file_format=True)
    shown = decode_dicom(out.getvalue(), target_size=224, display_size=512).display
    assert shown is not None
    assert shown.values.shape == (200, 800)  # 3 x 3 blocks
    sums = _exact_sums(image, 3)
    shift = max(0, int(sums.max() - sums.min()).bit_length() - 16)
    assert np.array_equal(shown.values, (sums - sums.min()) >> shift)
