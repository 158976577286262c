"""DICOM radiograph decoding: strict header parsing, rescale, VOI LUT / window, polarity."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.cxr_preprocess.codestream import (
    DEFLATED_SYNTAX,
    JPEG_2000_SYNTAXES,
    check_frame,
    file_meta_syntax,
)
from models.cxr_preprocess.dicom_pixels import (
    PIXEL_DATA,
    check_pixels_decodable,
    decode_j2k_reduced,
    first_frame,
    native_pixels,
    pixel_element,
    reduce_level,
    reduce_stored,
)
from models.cxr_preprocess.display import DisplayValues, display_factor, display_values
from models.cxr_preprocess.image import DEFAULT_MAX_PIXELS, Array, DecodedImage, ImageError
from models.cxr_preprocess.transform import percentile_window

__all__ = ["decode_dicom", "display_facts"]

_CHEST_PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2"}
_NOT_IMAGES = {"1.2.840.10008.1.3.10"}  # Media Storage Directory (DICOMDIR)

# pydicom's reading validation mode is a process-wide setting: switch it to RAISE
# while at least one decode is running and restore it when the last one ends.
_strict_lock = threading.Lock()
_strict_users = 0
_strict_saved: int | None = None


@contextmanager
def _strict_reading() -> Iterator[None]:
    global _strict_users, _strict_saved
    from pydicom import config

    with _strict_lock:
        if _strict_users == 0:
            _strict_saved = config.settings.reading_validation_mode
            config.settings.reading_validation_mode = config.RAISE
        _strict_users += 1
    try:
        yield
    finally:
        with _strict_lock:
            _strict_users -= 1
            if _strict_users == 0 and _strict_saved is not None:
                config.settings.reading_validation_mode = _strict_saved


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip().upper() or None


def _stored_text(ds: Any, keyword: str) -> str | None:
    """A text attribute exactly as stored (identifiers keep their case)."""
    value = ds.get(keyword)
    return str(value) if value not in (None, "") else None


def _number(value: Any) -> float | None:
    try:
        if isinstance(value, list | tuple) or (
            hasattr(value, "__len__") and not isinstance(value, str)
        ):
            value = value[0]
        out = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return out if np.isfinite(out) else None


def _age_years(text: str | None) -> float | None:
    if not text or len(text) != 4 or not text[:3].isdigit():
        return None
    scale = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}.get(text[3])
    return None if scale is None else int(text[:3]) * scale


_STUDY_TIME = re.compile(r"\d{2,6}(\.\d{1,6})?")
_ORIENTATION = re.compile(r"[APRLHFO]{1,3}")


def _optional(ds: Any, keyword: str) -> Any:
    """An optional attribute, or None when it is missing or its value does not parse
    (strict reading raises on it: a bad optional tag is no fact, not an unreadable file)."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def display_facts(ds: Any) -> dict[str, Any]:
    """StudyTime, ImageLaterality and PatientOrientation of a parsed header, each only
    where it is well formed (the X-ray reader shows them): ``study_time``,
    ``laterality``, ``orientation``."""
    time_ = str(_optional(ds, "StudyTime") or "").strip()
    laterality = str(_optional(ds, "ImageLaterality") or "").strip().upper()
    raw = _optional(ds, "PatientOrientation") or []
    try:
        orientation = [str(v).strip().upper() for v in raw]
    except TypeError:
        orientation = []
    facts: dict[str, Any] = {}
    if _STUDY_TIME.fullmatch(time_):
        facts["study_time"] = time_
    if laterality in ("R", "L", "B", "U"):
        facts["laterality"] = laterality
    if len(orientation) == 2 and all(_ORIENTATION.fullmatch(v) for v in orientation):
        facts["orientation"] = (orientation[0], orientation[1])
    return facts


def _window(values: Array, ds: Any) -> Array:
    """Apply the VOI LUT sequence, else the first window, else a percentile window."""
    seq = ds.get("VOILUTSequence")
    if seq:
        item = seq[0]
        desc = [int(v) for v in item.LUTDescriptor]
        entries = desc[0] or 65536
        first, bits = desc[1], desc[2]
        raw = item.get("LUTData")
        if isinstance(raw, bytes):
            raw = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<u2")
        table = np.asarray(raw if raw is not None else [], dtype=np.float32).ravel()[:entries]
        if table.size < 2:
            raise ImageError("unreadable", "VOI LUT has fewer than 2 entries")
        xs = first + np.arange(table.size, dtype=np.float32)
        mapped = np.interp(values, xs, table) / float((1 << min(bits, 16)) - 1)
        return np.asarray(np.clip(mapped, 0.0, 1.0), dtype=np.float32)
    center, width = _number(ds.get("WindowCenter")), _number(ds.get("WindowWidth"))
    function = _text(ds, "VOILUTFunction") or "LINEAR"
    if center is not None and width is not None and width >= 1.0:
        if function == "SIGMOID":
            return np.asarray(1.0 / (1.0 + np.exp(-4.0 * (values - center) / width)), np.float32)
        out: NDArray[Any]
        if function == "LINEAR_EXACT":
            out = (values - center) / width + 0.5
        else:
            out = (values - (center - 0.5)) / (width - 1.0) + 0.5 if width > 1 else values * 0
        return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
    return percentile_window(values)


def _linear_window(ds: Any) -> tuple[float, float] | None:
    """The header's first window (centre, width) unless a VOI LUT sequence overrides it."""
    if ds.get("VOILUTSequence"):
        return None
    center, width = _number(ds.get("WindowCenter")), _number(ds.get("WindowWidth"))
    return (center, width) if center is not None and width is not None and width >= 1 else None


def _display(
    stored: NDArray[Any],
    ds: Any,
    size: int,
    photometric: str,
    slope: float | None,
    intercept: float | None,
    masked: bool,
) -> DisplayValues:
    k = display_factor(stored.shape[0], stored.shape[1], size)
    # Native and pydicom-decoded pixels are masked to BitsStored; a JPEG 2000 decode of
    # ours keeps its codestream's precision, which may declare more bits (then the sums
    # are bound by the largest value, not the header).
    bits = int(_number(ds.get("BitsStored")) or 0)
    trusted = masked and 0 < bits <= 8 * stored.dtype.itemsize
    return display_values(
        stored,
        k,
        slope=1.0 if slope is None or intercept is None else slope,
        intercept=0.0 if slope is None or intercept is None else intercept,
        window=_linear_window(ds),
        invert=photometric == "MONOCHROME1",
        bits=bits if trusted else None,
    )


def decode_dicom(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_size: int | None = None,
    display_size: int = 0,
) -> DecodedImage:
    """Decode a single-frame greyscale DICOM radiograph.

    Args:
        data: the DICOM Part 10 file bytes (with preamble).
        max_pixels: refuse Rows x Columns x frames above this, before decoding.
        target_size: the model input size; when given the image may be decoded at a
            reduced resolution whose short side is still >= ``target_size``.
        display_size: when > 0, also keep the reader's copy of the stored values
            (:mod:`~models.cxr_preprocess.display`), short side >= this where the long
            side allows, from the pixels already decoded (a reduced JPEG 2000 decode
            smaller than that is decoded once more at the level it needs).

    Returns:
        The decoded image and header attributes.

    Raises:
        ImageError: reason ``unreadable``, ``no-image``, ``too-large``, ``size-mismatch``
            (the codestream declares another size than Rows x Columns), ``no-decoder``,
            ``multi-frame``, ``colour`` or ``unsupported-pixels``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    with _strict_reading():
        try:
            if file_meta_syntax(data)[0] == DEFLATED_SYNTAX:
                # pydicom would inflate all of it in one call, however large.
                raise ImageError("no-decoder", "deflated data sets are not read")
            fp = io.BytesIO(data)
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            element = pixel_element(data, fp.tell(), ds)
            sop_class = str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID"))
            if element is None and b"\xe0\x7f" in data[-12:]:
                # pydicom stops quietly at a truncated element header at the end.
                raise ImageError("unreadable", "the file ends inside the pixel data header")
            if sop_class in _NOT_IMAGES or element is None:
                raise ImageError("no-image", "the DICOM object has no pixel data")
            if element[0] != PIXEL_DATA:
                raise ImageError("unsupported-pixels", "float pixel data is not read")
            rows, cols = int(ds.Rows), int(ds.Columns)
            frames = int(_number(ds.get("NumberOfFrames")) or 1)
            photometric = _text(ds, "PhotometricInterpretation") or ""
            samples = int(ds.get("SamplesPerPixel") or 1)
            if rows < 1 or cols < 1 or frames < 1:
                raise ImageError("unreadable", f"Rows {rows}, Columns {cols}, frames {frames}")
            if rows * cols * frames * samples > max_pixels:
                raise ImageError(
                    "too-large",
                    f"{rows} x {cols} x {frames} frames x {samples} samples is over "
                    f"{max_pixels} pixels",
                )
            if frames > 1:
                raise ImageError("multi-frame", f"{frames} frames; one radiograph is expected")
            if samples != 1 or photometric not in _CHEST_PHOTOMETRIC:
                raise ImageError("colour", f"{photometric or 'unknown'} with {samples} samples")
            syntax = str(ds.file_meta.TransferSyntaxUID)
            level = reduce_level(rows, cols, target_size)
            j2k_frame: bytes | None = None
            stored = native_pixels(data, element, ds, rows, cols)
            if stored is None:  # compressed or big endian: let pydicom read the pixel data
                full = pydicom.dcmread(io.BytesIO(data))
                check_pixels_decodable(full, rows, cols, frames)
                if full.file_meta.TransferSyntaxUID.is_compressed:
                    frame = first_frame(full)
                    bytes_per_sample = int(full.BitsAllocated) // 8
                    check_frame(syntax, frame, rows, cols, bytes_per_sample)
                    if level and syntax in JPEG_2000_SYNTAXES:
                        stored = decode_j2k_reduced(frame, level)
                        j2k_frame = frame
                if stored is None:
                    stored = full.pixel_array
            if stored.ndim != 2 or stored.shape[0] < 1:
                raise ImageError("unreadable", f"decoded pixels have shape {stored.shape}")
            values = reduce_stored(stored, target_size)
            reduction = rows / values.shape[0]
            slope = _number(ds.get("RescaleSlope"))
            intercept = _number(ds.get("RescaleIntercept"))
            if slope is not None and intercept is not None and (slope, intercept) != (1.0, 0.0):
                values = values * np.float32(slope) + np.float32(intercept)
            pixels = _window(values, ds)
            if photometric == "MONOCHROME1":
                pixels = 1.0 - pixels
            display = None
            if display_size > 0:
                shown = stored
                if j2k_frame is not None and min(stored.shape) < display_size:
                    level_d = reduce_level(rows, cols, display_size)
                    finer = decode_j2k_reduced(j2k_frame, level_d) if level_d < level else None
                    shown = stored if finer is None else finer
                display = _display(
                    shown, ds, display_size, photometric, slope, intercept, j2k_frame is None
                )
            spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
            descriptions = tuple(
                t
                for t in (
                    _text(ds, k) for k in ("StudyDescription", "SeriesDescription", "ProtocolName")
                )
                if t
            )
            sex = {"F": "female", "M": "male", "O": "other"}.get(_text(ds, "PatientSex") or "")
            return DecodedImage(
                pixels=np.ascontiguousarray(pixels, dtype=np.float32),
                source="dicom",
                rows=rows,
                columns=cols,
                reduction=float(reduction),
                frames=frames,
                colour=False,
                modality=_text(ds, "Modality"),
                view=_text(ds, "ViewPosition"),
                body_part=_text(ds, "BodyPartExamined"),
                descriptions=descriptions,
                sex=sex,
                age=_age_years(_text(ds, "PatientAge")),
                pixel_spacing=(
                    (float(spacing[0]), float(spacing[1]))
                    if spacing is not None and len(spacing) == 2
                    else None
                ),
                photometric=photometric,
                bits_stored=int(ds.get("BitsStored") or 0) or None,
                transfer_syntax=syntax,
                study_uid=_text(ds, "StudyInstanceUID"),
                series_uid=_text(ds, "SeriesInstanceUID"),
                sop_instance_uid=_text(ds, "SOPInstanceUID"),
                patient_id=_stored_text(ds, "PatientID"),
                accession=_stored_text(ds, "AccessionNumber"),
                study_date=_stored_text(ds, "StudyDate"),
                display=display,
                **display_facts(ds),
            )
        except ImageError:
            raise
        except (InvalidDicomError, EOFError) as exc:
            raise ImageError(
                "unreadable", f"not a readable DICOM file ({type(exc).__name__})"
            ) from exc
        except MemoryError as exc:
            raise ImageError("too-large", "not enough memory to decode the image") from exc
        except Exception as exc:
            raise ImageError(
                "unreadable", f"DICOM could not be decoded ({type(exc).__name__})"
            ) from exc
