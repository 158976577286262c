"""Chest X-ray preprocessing: orientation, polarity, VOI, reduced decoding, speed."""

from __future__ import annotations

import io
import statistics
import time
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from models.cxr_preprocess import (
    NORMALISATION,
    ImageError,
    area_resize,
    decode_dicom,
    decode_image,
    decode_png,
    image_spec,
    to_model_input,
)
from models.cxr_preprocess.transform import block_mean
from training.cxr_bad_inputs import dicom_bytes, png_bytes
from training.cxr_synthetic import render_case, write_dicom
from training.cxr_synthetic_dicom import jpeg2000_lossless


def _known(rows: int = 300, cols: int = 200) -> np.ndarray:
    """Dark background, a bright block top-left, a mid-grey block bottom-right."""
    img = np.full((rows, cols), 0.1, dtype=np.float32)
    img[20:80, 10:60] = 0.9
    img[rows - 80 : rows - 20, cols - 60 : cols - 10] = 0.5
    return img


def _window_full(ds: Any, maxval: int = 4095) -> None:
    ds.WindowCenter = f"{(maxval + 1) / 2:g}"
    ds.WindowWidth = f"{maxval + 1:g}"


def _assert_known_layout(pixels: np.ndarray) -> None:
    rows, cols = pixels.shape
    top_left = pixels[: rows // 4, : cols // 3].max()
    bottom_right = pixels[-rows // 4 :, -cols // 3 :].max()
    top_right = pixels[: rows // 4, -cols // 3 :].mean()
    assert top_left > 0.8
    assert 0.4 < bottom_right < 0.6
    assert top_right < 0.2


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_orientation_and_polarity_with_a_known_image(photometric: str) -> None:
    known = _known()
    stored = np.rint(known * 4095).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    data = dicom_bytes(stored, photometric=photometric, bits_stored=12, extra=_window_full)
    decoded = decode_dicom(data)
    assert decoded.pixels.shape == (300, 200)  # not transposed
    assert decoded.rows == 300
    assert decoded.columns == 200
    _assert_known_layout(decoded.pixels)
    np.testing.assert_allclose(decoded.pixels, known, atol=2e-3)
    model_input = to_model_input(decoded, size=64)
    assert model_input.shape == (1, 64, 64)
    assert model_input.dtype == np.float32
    _assert_known_layout(model_input[0])


def test_png_and_dicom_of_the_same_image_agree() -> None:
    known = _known()
    png = decode_png(png_bytes(Image.fromarray(np.rint(known * 255).astype(np.uint8))))
    assert png.pixels.shape == (300, 200)
    _assert_known_layout(png.pixels)
    stored = np.rint(known * 4095).astype(np.uint16)
    dcm = decode_dicom(dicom_bytes(stored, bits_stored=12, extra=_window_full))
    np.testing.assert_allclose(to_model_input(png, 32), to_model_input(dcm, 32), atol=3e-3, rtol=0)


def test_rescale_then_linear_window_follow_the_dicom_formula() -> None:
    stored = np.array([[0, 100, 200, 300]] * 4, dtype=np.uint16)

    def attrs(ds: Any) -> None:
        ds.RescaleSlope, ds.RescaleIntercept = "2", "-100"  # -> -100, 100, 300, 500
        ds.WindowCenter, ds.WindowWidth = "200", "401"

    pixels = decode_dicom(dicom_bytes(stored, extra=attrs)).pixels[0]
    c, w = 200.0, 401.0
    expected = np.clip((np.array([-100, 100, 300, 500]) - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(pixels, expected, atol=1e-6)


def test_voi_lut_sequence_takes_precedence_over_the_window() -> None:
    stored = np.array([[0, 1, 2, 3]] * 2, dtype=np.uint16)

    def attrs(ds: Any) -> None:
        item = Dataset()
        item.LUTDescriptor = [4, 0, 8]
        item.add_new(0x00283006, "US", [255, 0, 128, 64])  # LUTData, non-monotonic
        ds.VOILUTSequence = Sequence([item])
        ds.WindowCenter, ds.WindowWidth = "1", "2"

    pixels = decode_dicom(dicom_bytes(stored, extra=attrs)).pixels[0]
    np.testing.assert_allclose(pixels, np.array([255, 0, 128, 64]) / 255.0, atol=1e-6)


def test_bits_above_bits_stored_are_ignored() -> None:
    known = np.rint(_known(64, 64) * 4095).astype(np.uint16)
    overlay = known | np.uint16(0xF000)  # garbage in the 4 unused high bits
    clean = decode_dicom(dicom_bytes(known, bits_stored=12, extra=_window_full)).pixels
    dirty = decode_dicom(dicom_bytes(overlay, bits_stored=12, extra=_window_full)).pixels
    np.testing.assert_array_equal(clean, dirty)


def test_signed_pixels_keep_their_sign_whatever_the_bits_above_bits_stored() -> None:
    values = np.array([[-2048, -1, 0, 2047]] * 2, dtype=np.int16)  # 12-bit two's complement
    garbage = ((values.view(np.uint16) & np.uint16(0x0FFF)) | np.uint16(0x5000)).view(np.int16)

    def signed(ds: Any) -> None:
        ds.PixelRepresentation = 1
        ds.WindowCenter, ds.WindowWidth = "0", "4096"

    clean = decode_dicom(dicom_bytes(values, bits_stored=12, extra=signed)).pixels
    dirty = decode_dicom(dicom_bytes(garbage, bits_stored=12, extra=signed)).pixels
    np.testing.assert_array_equal(clean, dirty)
    expected = np.clip((values[0] + 0.5) / 4095 + 0.5, 0, 1)  # DICOM LINEAR window
    np.testing.assert_allclose(clean[0], expected, atol=1e-6)


def test_no_window_uses_percentiles_and_header_attributes_are_read(tmp_path: Any) -> None:
    case = render_case(0, 3, (256, 256), findings=["nodule"])
    path = tmp_path / "x.dcm"
    write_dicom(case, path, seed=0, index=3, patient_id="P1", site="s", modality="DX")
    ds = pydicom.dcmread(path)
    del ds.WindowCenter
    del ds.WindowWidth
    buf = io.BytesIO()
    ds.save_as(buf)
    decoded = decode_dicom(buf.getvalue())
    assert decoded.modality == "DX"
    assert decoded.body_part == "CHEST"
    assert decoded.view in {"PA", "AP"}
    assert decoded.sex == case.sex
    assert decoded.age == case.age
    assert decoded.pixel_spacing == pytest.approx((430 / 256, 430 / 256), rel=1e-5)
    assert decoded.sop_instance_uid == ds.SOPInstanceUID
    assert 0.0 <= decoded.pixels.min() < 0.05
    assert decoded.pixels.max() > 0.95


def test_reduced_decoding_keeps_target_and_matches_full_decoding() -> None:
    case = render_case(1, 4, (1024, 900), findings=[])
    stored = np.rint(case.image * 4095).astype(np.uint16)
    data = dicom_bytes(stored, bits_stored=12, extra=_window_full)
    full, reduced = decode_dicom(data), decode_dicom(data, target_size=224)
    assert reduced.pixels.shape == (256, 225)
    assert reduced.reduction == pytest.approx(4.0)
    assert (reduced.rows, reduced.columns) == (1024, 900)
    diff = np.abs(to_model_input(full) - to_model_input(reduced))
    assert diff.mean() < 0.01


def test_jpeg2000_is_decoded_at_a_reduced_resolution_level(tmp_path: Any) -> None:
    case = render_case(2, 5, (1024, 1024), findings=[])
    path = tmp_path / "x.dcm"
    write_dicom(case, path, seed=2, index=5, patient_id="P", site="s", bits_stored=12)
    plain = path.read_bytes()
    j2k = jpeg2000_lossless(plain)
    reduced = decode_dicom(j2k, target_size=224)
    assert reduced.transfer_syntax == pydicom.uid.JPEG2000Lossless
    assert reduced.pixels.shape == (256, 256)  # resolution level 2, not a full decode
    reference = to_model_input(decode_dicom(plain, target_size=224))
    diff = np.abs(to_model_input(reduced) - reference)
    assert diff.mean() < 0.01
    assert diff.max() < 0.2
    full = decode_dicom(j2k)
    assert full.pixels.shape == (1024, 1024)
    # The reader's copy: the frame once more at the level its size needs (level 1),
    # the model's pixels unchanged.
    shown = decode_dicom(j2k, target_size=224, display_size=512)
    assert np.array_equal(shown.pixels, reduced.pixels)
    assert shown.display is not None
    assert shown.display.values.shape == (512, 512)
    assert reduced.display is None


def test_large_radiograph_decodes_to_model_input_quickly(tmp_path: Any) -> None:
    case = render_case(0, 0, (3000, 2500))
    path = tmp_path / "big.dcm"
    write_dicom(case, path, seed=0, index=0, patient_id="P", site="s", bits_stored=16)
    data = path.read_bytes()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        to_model_input(decode_dicom(data, target_size=224), 224)
        times.append(time.perf_counter() - start)
    # ~15 ms on an idle 2-core host; the bound leaves room for a busy CI machine.
    assert statistics.median(times) < 0.15


def test_strict_reading_is_scoped_to_the_call() -> None:
    before = config.settings.reading_validation_mode
    decode_dicom(dicom_bytes(np.zeros((8, 8), np.uint16), extra=_window_full))
    with pytest.raises(ImageError):
        decode_dicom(b"\0" * 128 + b"DICM" + b"\1" * 50)
    assert config.settings.reading_validation_mode == before


def test_strict_reading_refuses_invalid_values() -> None:
    data = dicom_bytes(np.zeros((8, 8), np.uint16), extra=_window_full)
    assert data.count(b"2048") == 1  # WindowCenter, a decimal string (DS)
    decode_dicom(data)
    with pytest.raises(ImageError) as err:
        decode_dicom(data.replace(b"2048", b"20x8"))
    assert err.value.reason == "unreadable"


def test_decode_image_dispatches_on_the_dicom_magic() -> None:
    dcm = dicom_bytes(np.zeros((8, 8), np.uint16), extra=_window_full)
    png = png_bytes(Image.fromarray(np.zeros((8, 8), np.uint8)))
    assert decode_image(dcm).source == "dicom"
    assert decode_image(png).source == "png"
    with pytest.raises(ImageError, match="preamble"):
        decode_image(dcm[132:])


def test_area_resize_preserves_the_mean_and_handles_any_ratio() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((1000, 700)).astype(np.float32)
    for shape in [(224, 224), (333, 100), (1000, 700), (7, 9)]:
        out = area_resize(img, shape)
        assert out.shape == shape
        assert out.mean() == pytest.approx(img.mean(), abs=0.01)
    ramp = np.tile(np.arange(448, dtype=np.float32), (10, 1))
    np.testing.assert_allclose(area_resize(ramp, (10, 224))[0], np.arange(224) * 2 + 0.5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32])
@pytest.mark.parametrize(("shape", "k"), [((512, 512), 2), ((301, 257), 3), ((3000, 2500), 11)])
def test_block_mean_of_stored_integers_is_the_exact_block_average(
    dtype: Any, shape: tuple[int, int], k: int
) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(k)
    stored = rng.integers(max(info.min, -32768), min(info.max, 65535), shape, endpoint=True)
    stored = stored.astype(dtype)
    r, c = shape[0] // k, shape[1] // k  # the edge remainder is dropped
    expected = stored[: r * k, : c * k].astype(np.float64).reshape(r, k, c, k).mean(axis=(1, 3))
    out = block_mean(stored, k)
    assert out.dtype == np.float32
    assert out.shape == (r, c)
    np.testing.assert_array_equal(out, expected.astype(np.float32))


def test_image_spec_records_the_preprocessing() -> None:
    spec = image_spec(224)
    assert spec.size == 224
    assert spec.photometric == "MONOCHROME2"
    assert spec.normalisation == NORMALISATION
