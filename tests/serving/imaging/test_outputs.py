"""What is built from a result: heatmap overlay, FHIR, DICOM SR and SC."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from PIL import Image

from serving.imaging.dicom_out import (
    COMPREHENSIVE_SR,
    SECONDARY_CAPTURE,
    heatmap_secondary_capture,
    structured_report,
    to_bytes,
)
from serving.imaging.fhir import LABEL_SYSTEM, result_bundle
from serving.imaging.heatmap import overlay_png, upsample_cam
from tests.serving.imaging.cxr_fixtures import dicom_bytes, read
from tests.serving.imaging.results_fixtures import heatmap_png, make_result


def test_upsampled_map_keeps_polarity_and_peak() -> None:
    cam = np.zeros((8, 8), np.float32)
    cam[1, 6] = 4.0  # hottest cell: upper right
    up = upsample_cam(cam, (64, 64))
    row, col = np.unravel_index(int(np.argmax(up)), up.shape)
    assert up.max() == pytest.approx(1.0)
    assert up.min() == pytest.approx(0.0)
    assert row < 16
    assert col > 44


def test_overlay_colours_only_the_hot_region() -> None:
    png = heatmap_png()
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    assert rgb.shape == (64, 64, 3)
    hot = rgb[2, 2]
    cold = rgb[60, 60]
    assert hot[0] - hot[2] > 40  # red tint where the map is hottest
    assert abs(int(cold[0]) - int(cold[2])) <= 2  # grey where it is cold


def test_flat_map_gives_a_plain_grey_overlay() -> None:
    image = np.full((32, 32), 0.5, np.float32)
    rgb = np.asarray(Image.open(io.BytesIO(overlay_png(image, np.ones((4, 4), np.float32)))))
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_fhir_bundle_validates_and_links_everything() -> None:
    result = make_result()
    bundle = result_bundle(result, "https://tonle.example.org")
    resources = [entry.resource for entry in bundle.entry]
    reports = [r for r in resources if isinstance(r, DiagnosticReport)]
    observations = [r for r in resources if isinstance(r, Observation)]
    assert len(reports) == 1
    assert len(observations) == 5
    report = reports[0]
    assert report.status == "preliminary"
    assert report.subject.reference == "Patient/PAT-001"
    assert {ref.reference for ref in report.result} == {f"Observation/{o.id}" for o in observations}
    assert report.imagingStudy[0].identifier.value == "urn:oid:1.2.3.4"
    assert report.presentedForm[0].url.endswith(f"/v1/imaging/results/{result.id}/heatmap.png")
    assert "unverified" in report.conclusion
    tb = next(o for o in observations if o.code.coding[0].code == "tb")
    assert tb.code.coding[0].system == LABEL_SYSTEM
    assert float(tb.valueQuantity.value) == pytest.approx(0.81)
    assert tb.interpretation[0].coding[0].code == "POS"
    nodule = next(o for o in observations if o.code.coding[0].code == "nodule")
    assert nodule.interpretation[0].coding[0].code == "NEG"
    device = next(r for r in resources if r.__resource_type__ == "Device")
    assert device.identifier[0].value == result.model.sha256
    assert device.version[0].value == "1.0.0"


def test_structured_report_marks_ai_and_names_the_model() -> None:
    source = read(dicom_bytes(study_uid="1.2.3.4"))
    result = make_result()
    sr = read(to_bytes(structured_report(source, result)))
    assert sr.SOPClassUID == COMPREHENSIVE_SR
    assert sr.Modality == "SR"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.PatientID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    equipment = sr.ContributingEquipmentSequence[0]
    assert equipment.Manufacturer == "Tonle"
    assert equipment.ManufacturerModelName == "cxr-triage"
    assert equipment.SoftwareVersions == "1.0.0"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    numbers = {
        item.ConceptNameCodeSequence[0].CodeValue: float(item.MeasuredValueSequence[0].NumericValue)
        for item in sr.ContentSequence
        if item.ValueType == "NUM"
    }
    assert numbers == pytest.approx(
        {"abnormal": 0.92, "tb": 0.81, "nodule": 0.1, "consolidation": 0.05, "effusion": 0.3}
    )
    texts = " ".join(str(i.TextValue) for i in sr.ContentSequence if i.ValueType == "TEXT")
    assert "AI GENERATED, UNVERIFIED" in texts


def test_secondary_capture_carries_the_overlay_pixels() -> None:
    source = read(dicom_bytes())
    png = heatmap_png()
    sc = read(to_bytes(heatmap_secondary_capture(source, make_result(), png)))
    assert sc.SOPClassUID == SECONDARY_CAPTURE
    assert "UNVERIFIED" in sc.ImageComments
    assert "UNVERIFIED" in sc.SeriesDescription
    assert sc.ContributingEquipmentSequence[0].Manufacturer == "Tonle"
    expected = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert np.array_equal(sc.pixel_array, expected)
    assert isinstance(sc, pydicom.FileDataset)
