"""The decoded-image type and the decode errors shared by the chest X-ray decoders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.cxr_preprocess.display import DisplayValues

__all__ = ["DECODE_REASONS", "DEFAULT_MAX_PIXELS", "Array", "DecodedImage", "ImageError"]

DEFAULT_MAX_PIXELS = 40_000_000  # ~ 6300 x 6300; 80 MB of 16-bit pixels
DECODE_REASONS: dict[str, str] = {
    "unreadable": "not a readable DICOM / PNG / JPEG file (truncated, malformed, bad lengths)",
    "no-image": "a DICOM object without image pixel data (e.g. DICOMDIR, structured report)",
    "too-large": "Rows x Columns x frames (or PNG width x height) over the pixel limit",
    "size-mismatch": "the compressed pixels declare a size other than the DICOM Rows x Columns",
    "no-decoder": "compressed with a transfer syntax no installed decoder can read",
    "multi-frame": "more than one frame",
    "colour": "colour pixels (RGB, YBR, palette or a colour PNG/JPEG)",
    "unsupported-pixels": "bits allocated other than 8/16, float pixels, or transparency",
}

Array = NDArray[np.float32]


class ImageError(ValueError):
    """An image that cannot be decoded; ``reason`` is a code from :data:`DECODE_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    """A decoded radiograph: MONOCHROME2 float32 pixels in [0, 1] plus header facts.

    ``rows`` / ``columns`` are the stored image's size; ``pixels`` may be smaller when
    it was decoded at a reduced resolution (``reduction`` > 1).
    """

    pixels: Array
    source: str  # "dicom", "png" or "jpeg"
    rows: int
    columns: int
    reduction: float = 1.0
    frames: int = 1
    colour: bool = False
    modality: str | None = None
    view: str | None = None  # ViewPosition, e.g. "PA", "AP", "LL"
    body_part: str | None = None
    descriptions: tuple[str, ...] = ()  # study / series / protocol text, upper case
    sex: str | None = None  # "female", "male", "other"
    age: float | None = None  # years
    pixel_spacing: tuple[float, float] | None = None  # mm (row, column)
    photometric: str | None = None  # as stored
    bits_stored: int | None = None
    transfer_syntax: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    patient_id: str | None = None  # as stored (not upper-cased)
    accession: str | None = None  # as stored
    study_date: str | None = None  # DICOM StudyDate, YYYYMMDD
    display: DisplayValues | None = None  # the reader's copy, when it was asked for
    study_time: str | None = None  # DICOM StudyTime, HHMMSS[.FFFFFF], when well formed
    laterality: str | None = None  # DICOM ImageLaterality: R, L, B or U, when well formed
    orientation: tuple[str, str] | None = None  # DICOM PatientOrientation (row, column)
    extra: dict[str, Any] = field(default_factory=dict)
