"""What the X-ray reader is drawn from: the display copy, the DICOM display facts and
the side marker, on synthetic radiographs, pydicom's own test files and hostile input."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from models.cxr_preprocess import ImageError, decode_dicom, decode_png, to_model_input
from models.cxr_preprocess.dicom import display_facts
from serving.imaging.results import StudyRef
from serving.ui.pages import side_marker
from tests.serving.imaging.conftest import AppFactory
from tests.serving.imaging.cxr_fixtures import dicom_bytes, radiograph


def _with(data: bytes, **tags: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # hostile values are the point: write them anyway
        warnings.simplefilter("ignore")
        for name, value in tags.items():
            setattr(ds, name, value)
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("rows", "columns", "size"),
    [
        (2400, 2000, (800, 666)),  # 3 x 3 blocks: short side >= 512
        (3000, 2500, (750, 625)),
        (2400, 1200, (800, 400)),  # long side <= 1024 wins over the short side
        (512, 512, (512, 512)),  # kept at its own size
    ],
)
def test_the_display_copy_keeps_the_originals_values_and_the_model_input_unchanged(
    make_app: AppFactory, rows: int, columns: int, size: tuple[int, int]
) -> None:
    _, state = make_app()
    analyser = state.analyser
    original = radiograph(rows, columns)
    data = dicom_bytes(original)
    prepared = analyser.prepare(data, "application/dicom")
    shown = prepared.display
    assert shown is not None
    assert shown.values.dtype == np.uint16
    assert shown.values.shape == size
    # Exact block sums of the stored values (no resampler, no 8-bit rounding).
    k = rows // size[0]
    sums = original[: size[0] * k, : size[1] * k].astype(np.int64)
    sums = sums.reshape(size[0], k, size[1], k).sum(axis=(1, 3))
    assert np.array_equal(shown.values, sums - sums.min())
    assert len(np.unique(shown.values)) > 256  # more grey levels than an 8-bit copy
    # The model sees exactly what the model-size decode gives (no train/serve skew).
    decoded = decode_dicom(data, max_pixels=analyser.config.max_pixels, target_size=analyser.size)
    assert np.array_equal(prepared.model_input, to_model_input(decoded, size=analyser.size))


def test_the_display_window_is_the_dicom_window_in_display_units(make_app: AppFactory) -> None:
    _, state = make_app()
    original = radiograph(1024, 1024)
    plain = decode_dicom(dicom_bytes(original), display_size=512).display
    assert plain is not None
    data = _with(dicom_bytes(original), WindowCenter=1500, WindowWidth=1000)
    windowed = state.analyser.prepare(data, "application/dicom").display
    assert windowed is not None
    low = int(original[:1024, :1024].reshape(512, 2, 512, 2).sum(axis=(1, 3)).min())
    assert windowed.center == pytest.approx(1500 * 4 - low)  # 2 x 2 sums, shifted to 0
    assert windowed.width == pytest.approx(1000 * 4)
    # MONOCHROME1 is flipped to white = dense, window included.
    flipped = decode_dicom(
        _with(dicom_bytes(original), PhotometricInterpretation="MONOCHROME1"), display_size=512
    ).display
    assert flipped is not None
    assert np.array_equal(flipped.values, plain.values.max() - plain.values)


def test_a_16_bit_png_keeps_16_bits_and_an_8_bit_png_its_own_scale(make_app: AppFactory) -> None:
    _, state = make_app()
    wide = radiograph(600, 560) * 16
    for pixels in (wide, (wide // 257).astype(np.uint8)):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        prepared = state.analyser.prepare(buffer.getvalue(), "image/png")
        shown = prepared.display
        assert shown is not None
        assert shown.values.shape == (600, 560)
        assert np.array_equal(shown.values, pixels.astype(np.int64) - int(pixels.min()))
        decoded = decode_png(buffer.getvalue(), target_size=state.analyser.size)
        assert np.array_equal(
            prepared.model_input, to_model_input(decoded, size=state.analyser.size)
        )
    assert (shown.center, shown.width) == (127.5 - int(pixels.min()), 256.0)  # value / 255


def _facts(data: bytes) -> dict[str, object]:
    """The display facts the one decode of the upload read (no second header parse)."""
    decoded = decode_dicom(data, target_size=64)
    found = {
        "study_time": decoded.study_time,
        "laterality": decoded.laterality,
        "orientation": decoded.orientation,
    }
    return {key: value for key, value in found.items() if value is not None}


def test_dicom_display_facts_are_read_when_well_formed() -> None:
    data = _with(
        dicom_bytes(), StudyTime="093012.5", ImageLaterality="U", PatientOrientation=["L", "F"]
    )
    assert _facts(data) == {"study_time": "093012.5", "laterality": "U", "orientation": ("L", "F")}


def test_the_read_carries_the_display_facts_of_its_one_decode(make_app: AppFactory) -> None:
    _, state = make_app()
    data = _with(dicom_bytes(), StudyTime="0930", ImageLaterality="L", PatientOrientation="P\\F")
    study = state.analyser.prepare(data, "application/dicom").study
    assert (study.study_time, study.laterality, study.orientation) == ("0930", "L", ("P", "F"))


def test_dicom_display_facts_from_pydicom_test_files() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    with open(path, "rb") as handle:
        assert _facts(handle.read()) == {"study_time": "072730"}


@pytest.mark.parametrize(
    "tags",
    [
        {"StudyTime": "<script>", "ImageLaterality": "left", "PatientOrientation": ["X", "Y"]},
        {"StudyTime": "1" * 40, "ImageLaterality": "", "PatientOrientation": ["L"]},
        {"StudyTime": "", "ImageLaterality": "RR", "PatientOrientation": ["L", "F", "A"]},
    ],
)
def test_malformed_display_facts_are_dropped_not_shown(tags: dict[str, object]) -> None:
    data = _with(dicom_bytes(), **tags)
    assert _facts(data) == {}  # and the image itself is still read


@pytest.mark.parametrize("data", [b"", b"\0" * 200, b"DICM" * 100, dicom_bytes()[:300]])
def test_unreadable_headers_give_no_facts(data: bytes) -> None:
    with pytest.raises(ImageError):
        decode_dicom(data)
    try:  # what a lenient parse of the torn header keeps is still checked
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception:
        return
    assert set(display_facts(ds)) <= {"study_time"}  # a torn file may carry its StudyTime


@pytest.mark.parametrize(
    ("orientation", "marker"),
    [
        (("L", "F"), ("R", "dicom")),  # the standard display: patient's right on the left
        (("LF", "F"), ("R", "dicom")),
        (("R", "F"), ("L", "dicom")),  # flipped: say so
        (None, ("R", "convention")),
        (("A", "F"), ("R", "convention")),  # not a frontal row direction
    ],
)
def test_side_marker(orientation: tuple[str, str] | None, marker: tuple[str, str]) -> None:
    assert side_marker(StudyRef(orientation=orientation)) == marker


def test_no_display_copy_when_configured(make_app: AppFactory) -> None:
    """``display_short_side: 0`` keeps none: the reader shows the analysed image."""
    _, state = make_app(display_short_side=0)
    prepared = state.analyser.prepare(dicom_bytes(radiograph(2400, 2000)), "application/dicom")
    assert prepared.display is None
