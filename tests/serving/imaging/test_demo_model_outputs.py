"""A read by a synthetic-trained CXR model says "demo model" in every output: the REST
answer, the FHIR bundle, the DICOM SR and secondary capture, the cxr-triage card."""

from __future__ import annotations

import dataclasses

from pydicom.uid import generate_uid

from serving.imaging.dicom_out import heatmap_secondary_capture, structured_report
from serving.imaging.fhir import result_bundle
from serving.imaging.results import ADVISORY
from serving.synthetic import DEMO_NOTE
from tests.ncd_fixtures import synthetic
from tests.serving.imaging.conftest import AppFactory
from tests.serving.imaging.cxr_fixtures import dicom_bytes
from tests.serving.imaging.results_fixtures import heatmap_png, make_result

DICOM = {"content-type": "application/dicom"}


def test_synthetic_model_reads_say_demo(make_app: AppFactory) -> None:
    client, state = make_app()
    real = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM).json()
    assert real["advisory"] == ADVISORY
    stored = state.analyser.stored
    state.analyser.stored = dataclasses.replace(stored, metadata=synthetic(stored.metadata))
    demo = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM).json()
    assert demo["advisory"] == f"{DEMO_NOTE} {ADVISORY}"


def test_fhir_and_dicom_outputs_carry_the_advisory_of_the_read() -> None:
    import pydicom

    result = make_result().model_copy(update={"advisory": f"{DEMO_NOTE} {ADVISORY}"})
    bundle = result_bundle(result).model_dump(mode="json")
    report = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    assert report["conclusion"].startswith(DEMO_NOTE)
    source = pydicom.dcmread(pydicom.filebase.DicomBytesIO(dicom_bytes()))
    source.SOPInstanceUID = generate_uid()
    sr = structured_report(source, result)
    texts = [str(item.get("TextValue", "")) for item in sr.ContentSequence]
    assert any(DEMO_NOTE in text for text in texts)
    sc = heatmap_secondary_capture(source, result, heatmap_png())
    assert DEMO_NOTE in sc.ImageComments
