"""Write a synthetic radiograph as a DICOM CR or DX file with synthetic patient and study."""

from __future__ import annotations

import io
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from training.cxr_synthetic_render import SyntheticCase

__all__ = ["FIELD_HEIGHT_MM", "jpeg2000_lossless", "write_dicom"]

# Physical height of the field of view; pixel spacing follows from the image size.
FIELD_HEIGHT_MM = 430.0

_CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
_DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def write_dicom(
    case: SyntheticCase,
    path: Path,
    *,
    seed: int,
    index: int,
    patient_id: str,
    site: str,
    modality: str | None = None,
    photometric: str | None = None,
    bits_stored: int | None = None,
) -> None:
    """Write a case as a DICOM CR or DX image with synthetic patient and study attributes.

    Args:
        case: the rendered case.
        path: output file.
        seed: data set seed (UIDs and attributes are derived from ``(seed, index)``).
        index: image number.
        patient_id: synthetic patient identifier.
        site: synthetic site, written as the institution name.
        modality: "CR" or "DX"; drawn when ``None``.
        photometric: "MONOCHROME1" or "MONOCHROME2"; drawn when ``None``.
        bits_stored: 12-16; drawn when ``None``.
    """
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng([seed, index, 11])
    modality = modality or str(case.attrs.get("modality", "CR"))
    if modality not in {"CR", "DX"}:
        raise ValueError(f"modality {modality!r}: use CR or DX")
    photometric = photometric or ("MONOCHROME1" if rng.random() < 0.35 else "MONOCHROME2")
    bits = bits_stored or int(rng.choice([12, 14, 16]))
    if not 12 <= bits <= 16:
        raise ValueError(f"bits_stored {bits}: use 12-16")
    maxval = (1 << bits) - 1
    # Detectors rarely use their full range: a pedestal and a gain that vary per image.
    lo = rng.uniform(0.02, 0.12) * maxval
    hi = rng.uniform(0.8, 0.98) * maxval
    values = lo + case.image * (hi - lo)
    if photometric == "MONOCHROME1":
        values = maxval - values
    pixels = np.clip(np.rint(values), 0, maxval).astype(np.uint16)
    slope, intercept = (1.0, 0.0) if rng.random() < 0.7 else (0.5, float(rng.integers(0, 200)))
    out = pixels.astype(np.float64) * slope + intercept
    # Headroom on the dense side (high values in MONOCHROME2, low in MONOCHROME1) keeps
    # bone and heart below white; the air side is windowed tightly.
    if photometric == "MONOCHROME1":
        p_lo, p_hi = np.percentile(out[::4, ::4], [0.1, 99.5])
        p_lo -= 0.25 * (p_hi - p_lo)
    else:
        p_lo, p_hi = np.percentile(out[::4, ::4], [0.5, 99.9])
        p_hi += 0.25 * (p_hi - p_lo)

    def uid(kind: str) -> str:
        return str(generate_uid(entropy_srcs=["tonle-synthetic-cxr", str(seed), str(index), kind]))

    rows, cols = pixels.shape
    spacing = FIELD_HEIGHT_MM / rows
    study_day = date(2024, 1, 1) + timedelta(days=int(rng.integers(0, 700)))
    birth = study_day - timedelta(days=int(case.age * 365.25 + rng.integers(0, 365)))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_CR_STORAGE if modality == "CR" else _DX_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(uid("sop"))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.StudyID = f"S{index:06d}"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.AccessionNumber = f"SYN{seed:03d}{index:07d}"[-16:]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_day.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = (
        f"{int(rng.integers(7, 18)):02d}{int(rng.integers(0, 60)):02d}00"
    )
    ds.Modality = modality
    ds.Manufacturer = "Tonle synthetic radiograph generator"
    ds.InstitutionName = site
    ds.PatientName = f"SYNTHETIC^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = "F" if case.sex == "female" else "M"
    ds.PatientAge = f"{case.age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA" if rng.random() < 0.8 else "AP"
    ds.PatientOrientation = ["L", "F"]  # rows run to the patient's left, columns to the feet
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
    ds.PixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    # Some CR readers ship a non-linear VOI LUT instead of a window (US LUT data must
    # stay under 64 KB, and its first value is unsigned: only for ranges that fit).
    if rng.random() < 0.15 and p_lo >= 0 and p_hi - p_lo < 32000:
        _add_voi_lut(ds, float(p_lo), float(p_hi), float(rng.uniform(0.8, 1.25)))
    else:
        ds.WindowCenter = f"{(p_lo + p_hi) / 2:.1f}"
        ds.WindowWidth = f"{max(p_hi - p_lo, 1.0):.1f}"
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _add_voi_lut(ds: Any, lo: float, hi: float, gamma: float) -> None:
    """A 12-bit VOI LUT (gamma curve) over the rescaled range [lo, hi]."""
    from pydicom import Dataset
    from pydicom.sequence import Sequence

    first = int(np.floor(lo))
    entries = int(min(32000, max(2, np.ceil(hi) - first + 1)))
    x = np.arange(entries, dtype=np.float64) / (entries - 1)
    table = np.rint(np.clip(x, 0, 1) ** gamma * 4095).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [entries, first, 12]
    item.add_new(0x00283006, "US", table.tolist())  # LUTData
    item.LUTExplanation = f"synthetic gamma {gamma:.2f}"
    ds.VOILUTSequence = Sequence([item])


def jpeg2000_lossless(data: bytes) -> bytes:
    """The same DICOM with its pixels stored as JPEG 2000 lossless (pylibjpeg encoder)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
