"""Declared codestream sizes are read and checked before any decoder allocates."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from models.cxr_preprocess import ImageError, decode_dicom, decode_png
from models.cxr_preprocess.codestream import check_frame, file_meta_syntax, j2k_size, jpeg_size
from tests.peak_memory import peak_growth_mb
from training.cxr_bad_inputs import BadInput, bomb_cases, dicom_bytes, png_bytes

# pydicom's bundled test files (no download): name -> (rows, columns) of the first frame.
REAL = {
    "JPEG2000.dcm": (1024, 256),  # JPEG 2000
    "MR_small_jp2klossless.dcm": (64, 64),  # JPEG 2000 lossless
    "JPEG-lossy.dcm": (1024, 256),  # JPEG extended, 12-bit
    "MR_small_RLE.dcm": (64, 64),  # RLE lossless
}


def _frame(name: str) -> tuple[str, bytes, int]:
    from pydicom.encaps import generate_frames

    path = get_testdata_file(name)
    assert isinstance(path, str), f"pydicom test file {name} is not installed"
    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    return str(ds.file_meta.TransferSyntaxUID), frame, int(ds.BitsAllocated) // 8


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_codestreams_match_their_headers(name: str) -> None:
    syntax, frame, nbytes = _frame(name)
    rows, cols = REAL[name]
    check_frame(syntax, frame, rows, cols, nbytes)  # no error
    with pytest.raises(ImageError) as caught:
        check_frame(syntax, frame, rows // 2, cols, nbytes)
    assert caught.value.reason == "size-mismatch"


def test_declared_sizes_are_read_from_the_markers() -> None:
    assert j2k_size(_frame("JPEG2000.dcm")[1]) == (1024, 256, 1)
    assert jpeg_size(_frame("JPEG-lossy.dcm")[1]) == [(1024, 256, 1)]
    jpeg = png_bytes(Image.new("L", (40, 30), 128), "JPEG")
    assert jpeg_size(jpeg) == [(30, 40, 1)]
    with pytest.raises(ImageError, match="SOI"):
        jpeg_size(b"\0" + jpeg)
    with pytest.raises(ImageError, match="length"):
        jpeg_size(jpeg[:30])  # inside the quantisation table


@pytest.mark.parametrize("case", bomb_cases()[:2], ids=lambda c: c.name)
def test_codestream_bombs_are_refused_without_decoding(case: BadInput) -> None:
    reason, growth = peak_growth_mb(lambda: _reason(case.data))
    assert reason == "size-mismatch"
    assert growth < 50, f"{growth:.0f} MB"


def _reason(data: bytes) -> str | None:
    try:
        decode_dicom(data, target_size=224)
    except ImageError as exc:
        return exc.reason
    return None


def test_rle_segment_that_expands_past_rows_x_columns_is_refused() -> None:
    pixels = np.zeros((64, 64), dtype=np.uint8)
    # One segment of 64 x 64 bytes would be right; 4000 runs of 128 bytes are not.
    segment = b"\x81\x00" * 4000
    header = struct.pack("<16I", 1, 64, *([0] * 14))

    def apply(ds: Any) -> None:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([header + segment])
        ds["PixelData"].VR = "OB"

    data = dicom_bytes(pixels, transfer_syntax="1.2.840.10008.1.2.5", extra=apply)
    assert _reason(data) == "size-mismatch"


def test_deflated_data_set_is_refused_before_pydicom_inflates_it() -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((64, 64), dtype=np.uint16))))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    syntax, data_set_at = file_meta_syntax(out.getvalue())
    assert syntax == pydicom.uid.DeflatedExplicitVRLittleEndian
    header = out.getvalue()[:data_set_at]  # then a zip bomb as the data set
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(b"\0" * (256 << 20)) + compressor.flush()
    reason, growth = peak_growth_mb(lambda: _reason(header + bomb))
    assert reason == "no-decoder"
    assert growth < 100, f"{growth:.0f} MB"


def test_rgb_png_is_reduced_in_bands_like_the_full_mean() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (300, 260), dtype=np.uint8)
    rgb = np.stack([grey, grey, np.clip(grey.astype(int) + 3, 0, 255)], axis=-1)
    decoded = decode_png(png_bytes(Image.fromarray(rgb.astype(np.uint8), "RGB")), target_size=64)
    k = 260 // 64
    expected = rgb.mean(axis=2)[: 300 // k * k, : 260 // k * k] / 255.0
    expected = expected.reshape(300 // k, k, 260 // k, k).mean(axis=(1, 3))
    assert decoded.pixels.shape == expected.shape
    assert decoded.pixels.dtype == np.float32
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    assert decoded.reduction == pytest.approx(300 / expected.shape[0])


def test_jp2_wrapped_frames_are_decoded_at_a_reduced_level() -> None:
    n = 3072  # a JP2 file (header boxes around the codestream), as some modalities send
    pixels = (np.add.outer(np.arange(n), np.arange(n)) % 4096).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG2000", irreversible=False)
    assert buf.getvalue()[4:8] == b"jP  "

    def apply(ds: Any) -> None:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"

    data = dicom_bytes(pixels, transfer_syntax="1.2.840.10008.1.2.4.90", extra=apply)
    decoded, growth = peak_growth_mb(lambda: decode_dicom(data, target_size=224))
    assert decoded.pixels.shape == (384, 384)
    # A full decode holds 3072 x 3072 samples as int32 and uint16 (over 50 MB).
    assert growth < 20, f"{growth:.0f} MB"
