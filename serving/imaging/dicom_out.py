"""Results as DICOM for the PACS: a Comprehensive SR and a secondary-capture heatmap.

Both objects are new series in the analysed study, copy the patient and study
attributes of the source image, say they are AI generated and unverified
(``VerificationFlag UNVERIFIED`` on the SR, ``ImageComments`` and the series
description on both), and carry the model's identity in the Contributing Equipment
Sequence (manufacturer ``Tonle``, model name, software version = model version),
as the IHE AI Results profile asks.
"""

from __future__ import annotations

import io
from datetime import UTC

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from serving.imaging.results import CxrResult

__all__ = [
    "COMPREHENSIVE_SR",
    "SECONDARY_CAPTURE",
    "UNVERIFIED_TEXT",
    "heatmap_secondary_capture",
    "read_header",
    "structured_report",
    "to_bytes",
]

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
UNVERIFIED_TEXT = "AI GENERATED, UNVERIFIED"
_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
_TONLE_SCHEME = "99TONLE"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning[:64]
    return item


def _base(source: Dataset, result: CxrResult, sop_class: str, modality: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    for keyword in _PATIENT_STUDY:
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)  # type: ignore[union-attr]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesNumber = 9900 if modality == "SR" else 9901
    ds.InstanceNumber = 1
    stamp = result.created.astimezone(UTC)
    ds.ContentDate = stamp.strftime("%Y%m%d")
    ds.ContentTime = stamp.strftime("%H%M%S")
    ds.SeriesDate = ds.ContentDate
    ds.SeriesTime = ds.ContentTime
    ds.Manufacturer = "Tonle"
    ds.ManufacturerModelName = result.model.name
    ds.SoftwareVersions = result.model.version
    ds.SeriesDescription = f"{UNVERIFIED_TEXT} - {result.model.name} {result.model.version}"[:64]
    equipment = Dataset()
    equipment.Manufacturer = "Tonle"
    equipment.ManufacturerModelName = result.model.name
    equipment.SoftwareVersions = result.model.version
    equipment.DeviceSerialNumber = result.model.sha256[:64]
    equipment.ContributionDateTime = stamp.strftime("%Y%m%d%H%M%S")
    equipment.ContributionDescription = f"{UNVERIFIED_TEXT}: chest X-ray triage"
    equipment.PurposeOfReferenceCodeSequence = Sequence(
        [_code("109102", "DCM", "Processing Equipment")]
    )
    ds.ContributingEquipmentSequence = Sequence([equipment])
    return ds


def _reference(source: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return ref


def _evidence(source: Dataset) -> Sequence:
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([_reference(source)])
    study = Dataset()
    study.StudyInstanceUID = source.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    return Sequence([study])


def _content(value_type: str, name: Dataset, relationship: str = "CONTAINS") -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([name])
    return item


def _text(name: Dataset, value: str) -> Dataset:
    item = _content("TEXT", name)
    item.TextValue = value
    return item


def structured_report(source: Dataset, result: CxrResult) -> FileDataset:
    """A Comprehensive SR holding the scores, flags and thresholds of ``result``.

    Args:
        source: the analysed image's dataset (header is enough).
        result: the stored result for that image.
    """
    ds = _base(source, result, COMPREHENSIVE_SR, "SR")
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(source)
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    items = [
        _text(_code("121106", "DCM", "Comment"), f"{UNVERIFIED_TEXT}. {result.advisory}"),
        _text(_code("111001", "DCM", "Algorithm Name"), result.model.name),
        _text(_code("111003", "DCM", "Algorithm Version"), result.model.version),
        _text(_code("sha256", _TONLE_SCHEME, "Model sha256"), result.model.sha256),
    ]
    for finding in result.findings:
        num = _content(
            "NUM", _code(finding.label, _TONLE_SCHEME, f"AI probability {finding.label}")
        )
        measured = Dataset()
        measured.NumericValue = f"{finding.probability:.6f}"[:16]
        measured.MeasurementUnitsCodeSequence = Sequence([_code("1", "UCUM", "no units")])
        num.MeasuredValueSequence = Sequence([measured])
        flag = _text(
            _code("flag", _TONLE_SCHEME, "AI flag at operating point"),
            (
                f"{'FLAGGED' if finding.flagged else 'not flagged'} at threshold "
                f"{finding.threshold:g} ({finding.threshold_source}: {finding.threshold_chosen_on})"
            )[:1024],
        )
        flag.RelationshipType = "HAS PROPERTIES"
        num.ContentSequence = Sequence([flag])
        items.append(num)
    ds.ContentSequence = Sequence(items)
    return ds


def heatmap_secondary_capture(
    source: Dataset, result: CxrResult, heatmap_png: bytes
) -> FileDataset:
    """A secondary-capture RGB image of the heatmap overlay, marked AI generated."""
    ds = _base(source, result, SECONDARY_CAPTURE, "OT")
    rgb = np.asarray(Image.open(io.BytesIO(heatmap_png)).convert("RGB"), dtype=np.uint8)
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = f"{UNVERIFIED_TEXT}: activation map for {result.heatmap_label}"[
        :1024
    ]
    ds.ImageComments = f"{UNVERIFIED_TEXT}. {result.advisory}"[:10240]
    ds.BurnedInAnnotation = "NO"
    ds.SourceImageSequence = Sequence([_reference(source)])
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = rgb.tobytes()
    return ds


def to_bytes(ds: FileDataset) -> bytes:
    """DICOM Part 10 bytes."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_header(data: bytes) -> Dataset:
    """The dataset of Part 10 bytes without pixel data."""
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
