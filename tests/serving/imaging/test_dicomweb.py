"""DICOMweb against a real Orthanc: QIDO-RS, WADO-RS, analysis and STOW-RS write-back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.auth import ApiKeyAuthenticator
from serving.imaging.config import DicomWebConfig
from serving.imaging.dicom_out import COMPREHENSIVE_SR, SECONDARY_CAPTURE
from serving.imaging.dicomweb import DicomWebClient, DicomWebError, parse_multipart
from tests.serving.imaging.conftest import AppFactory, LockableAudit
from tests.serving.imaging.cxr_fixtures import dicom_bytes, read
from tests.serving.imaging.orthanc import running_orthanc
from tests.serving.imaging.results_fixtures import stored_ids


@pytest.fixture(scope="module")
def pacs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as url:
        yield url


@pytest.fixture
def pacs(pacs_url: str) -> Iterator[DicomWebClient]:
    client = DicomWebClient(DicomWebConfig(base_url=pacs_url))
    yield client
    client.close()


def test_qido_wado_stow_round_trip(pacs: DicomWebClient) -> None:
    data = dicom_bytes(study_uid="1.2.826.0.1.1", patient_id="QW-1")
    pacs.store("1.2.826.0.1.1", [data])
    studies = pacs.search_studies(PatientID="QW-1")
    assert [s["0020000D"]["Value"][0] for s in studies] == ["1.2.826.0.1.1"]
    (instance,) = pacs.search_instances("1.2.826.0.1.1")
    assert instance.modality == "CR"
    assert pacs.retrieve_instance(instance) == data


def test_bad_uids_never_reach_the_pacs(pacs: DicomWebClient) -> None:
    with pytest.raises(DicomWebError) as caught:
        pacs.search_instances("../../system")
    assert caught.value.reason == "invalid-uid"


def test_unreachable_pacs_is_a_reasoned_error() -> None:
    client = DicomWebClient(DicomWebConfig(base_url="http://127.0.0.1:9/dicom-web", timeout_s=2))
    with pytest.raises(DicomWebError) as caught:
        client.search_studies()
    assert caught.value.reason == "pacs-unreachable"


def test_multipart_parser_splits_parts() -> None:
    body = b"--b1\r\nContent-Type: application/dicom\r\n\r\nAAA\r\n--b1\r\n\r\nBB\r\n--b1--\r\n"
    assert parse_multipart(body, 'multipart/related; boundary="b1"') == [b"AAA", b"BB"]
    with pytest.raises(DicomWebError):
        parse_multipart(body, "multipart/related")


def test_study_analysed_and_written_back(
    make_app: AppFactory, pacs: DicomWebClient, pacs_url: str, audit: LockableAudit
) -> None:
    study = "1.2.826.0.1.2"
    frontal = dicom_bytes(study_uid=study, patient_id="WB-1", series_uid="1.2.826.0.1.2.1")
    lateral = dicom_bytes(
        study_uid=study, patient_id="WB-1", series_uid="1.2.826.0.1.2.2", view="LL"
    )
    pacs.store(study, [frontal, lateral])
    client, _ = make_app(pacs=DicomWebConfig(base_url=pacs_url))
    response = client.post(f"/v1/imaging/studies/{study}/analyse")
    assert response.status_code == 200, response.text
    entries = {e["series_uid"]: e for e in response.json()["instances"]}
    assert entries["1.2.826.0.1.2.2"] == {
        "series_uid": "1.2.826.0.1.2.2",
        "sop_instance_uid": read(lateral).SOPInstanceUID,
        "assessable": False,
        "reason": "lateral-view",
    }
    analysed = entries["1.2.826.0.1.2.1"]
    assert analysed["assessable"] is True
    assert analysed["result"]["patient_ref"] == "WB-1"
    # The heatmap link is signed: it opens without credentials, and not unsigned.
    heatmap_url = analysed["result"]["heatmap_url"]
    assert "sig=" in heatmap_url
    assert client.get(heatmap_url).headers["content-type"] == "image/png"
    assert client.get(heatmap_url.split("?")[0]).status_code == 403
    written = analysed["written_back"]
    # The SR and the heatmap are now in the PACS, in the same study, new series.
    found = {i.sop: i for i in pacs.search_instances(study)}
    sr = read(pacs.retrieve_instance(found[written["sr_sop_instance_uid"]]))
    sc = read(pacs.retrieve_instance(found[written["heatmap_sop_instance_uid"]]))
    assert sr.SOPClassUID == COMPREHENSIVE_SR
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.PatientID == "WB-1"
    assert sr.ContributingEquipmentSequence[0].SoftwareVersions == "0.1.0"
    probability = {
        i.ConceptNameCodeSequence[0].CodeValue: float(i.MeasuredValueSequence[0].NumericValue)
        for i in sr.ContentSequence
        if i.ValueType == "NUM"
    }
    assert probability["abnormal"] == pytest.approx(
        analysed["result"]["findings"][0]["probability"], abs=1e-6
    )
    assert sc.SOPClassUID == SECONDARY_CAPTURE
    assert "UNVERIFIED" in sc.ImageComments
    assert sc.pixel_array.shape == (64, 64, 3)
    # The call's own row, and one per image (committed before its write-back).
    assert sorted((r.service_id, r.outcome) for r in audit.rows()) == [
        ("imaging-heatmap", "read"),
        ("imaging-study", "advice"),
        ("imaging-study-instance", "advice"),
        ("imaging-study-instance", "no-advice"),  # the lateral view
    ]
    study_row = next(r for r in audit.rows() if r.service_id == "imaging-study")
    assert study_row.request_id == response.json()["request_id"]
    assert study_row.request_id == response.headers["x-request-id"]
    # QIDO-RS listing for the patient shows the study and Tonle's read of it.
    listed = client.get("/v1/imaging/studies?patient=WB-1").json()["studies"]
    assert [(s["study_uid"], s["chest_xray"]) for s in listed] == [(study, True)]
    assert listed[0]["result_id"] == analysed["result"]["id"]
    assert set(listed[0]["modalities"]) >= {"CR", "SR"}
    assert client.get("/v1/imaging/studies?patient=../x").status_code == 400
    listing, bad = audit.rows()[-2:]
    assert (listing.service_id, listing.outcome) == ("imaging-studies", "read")
    assert listing.patient_ref == "WB-1"
    assert (bad.outcome, bad.reason) == ("refused", "invalid-request")
    # Analysing again is idempotent: nothing new is written to the PACS, and the stored
    # read shown again has an audit row of its own.
    before = audit.count()
    again = client.post(f"/v1/imaging/studies/{study}/analyse").json()
    assert all(e.get("repeat") or not e["assessable"] for e in again["instances"])
    assert len(pacs.search_instances(study)) == len(found)
    assert sorted((r.service_id, r.outcome) for r in audit.rows()[before:]) == [
        ("imaging-study", "read"),
        ("imaging-study-instance", "no-advice"),
        ("imaging-study-instance", "read"),
    ]
    # Nothing to analyse, no PACS configured: clear 4xx answers.
    assert client.post("/v1/imaging/studies/1.2.3.999/analyse").status_code == 404
    client2, _ = make_app()
    assert client2.post(f"/v1/imaging/studies/{study}/analyse").status_code == 409


def test_study_route_rejects_bad_uids(make_app: AppFactory, pacs_url: str) -> None:
    client, _ = make_app(pacs=DicomWebConfig(base_url=pacs_url))
    assert client.post("/v1/imaging/studies/abc/analyse").status_code == 400
    response = client.post("/v1/imaging/studies/1.2.3/analyse", content=b'{"series_uid": "x/y"}')
    assert response.status_code == 400
    huge = client.post("/v1/imaging/studies/1.2.3/analyse", content=b"{" + b" " * 10_000 + b"}")
    assert huge.status_code == 413


def test_study_read_is_stored_only_with_its_audit_row(
    make_app: AppFactory, pacs: DicomWebClient, pacs_url: str, audit: LockableAudit
) -> None:
    """The audit database refuses the commit: 503, no read stored, nothing written back."""
    study = "1.2.826.0.1.3"
    pacs.store(study, [dicom_bytes(study_uid=study, patient_id="WB-2")])
    client, _ = make_app(pacs=DicomWebConfig(base_url=pacs_url))
    audit.fail = True
    response = client.post(f"/v1/imaging/studies/{study}/analyse")
    assert response.status_code == 503
    assert "instances" not in response.json()
    audit.fail = False
    assert stored_ids(audit) == []
    assert audit.count() == 0
    assert [i.modality for i in pacs.search_instances(study)] == ["CR"]
    # So the next call analyses afresh (no "repeat" of a read nobody audited).
    again = client.post(f"/v1/imaging/studies/{study}/analyse").json()
    assert [e.get("repeat") for e in again["instances"]] == [None]
    assert [(r.service_id, r.outcome) for r in audit.rows()] == [
        ("imaging-study-instance", "advice"),
        ("imaging-study", "advice"),
    ]


def test_study_repeats_only_for_the_tenant_that_analysed_it(
    make_app: AppFactory, pacs: DicomWebClient, pacs_url: str, audit: LockableAudit
) -> None:
    study = "1.2.826.0.1.4"
    pacs.store(study, [dicom_bytes(study_uid=study, patient_id="WB-3")])
    keys = {t: {"x-api-key": audit.create_api_key(t, "pacs")[1]} for t in ("site-a", "site-b")}
    client, _ = make_app(
        dev=False,
        authenticator=ApiKeyAuthenticator(audit),
        pacs=DicomWebConfig(base_url=pacs_url, write_back=False),
    )
    url = f"/v1/imaging/studies/{study}/analyse"
    first = client.post(url, headers=keys["site-a"]).json()["instances"][0]
    other = client.post(url, headers=keys["site-b"]).json()["instances"][0]
    repeat = client.post(url, headers=keys["site-a"]).json()["instances"][0]
    # B gets a read of its own, never A's; A gets its stored read back.
    assert other.get("repeat") is None
    assert other["result"]["id"] != first["result"]["id"]
    assert repeat["repeat"] is True
    assert repeat["result"]["id"] == first["result"]["id"]
    instances = [r for r in audit.rows() if r.service_id == "imaging-study-instance"]
    assert [(r.caller_tenant, r.outcome) for r in instances] == [
        ("site-a", "advice"),
        ("site-b", "advice"),
        ("site-a", "read"),
    ]
    listed = {
        t: client.get("/v1/imaging/studies?patient=WB-3", headers=keys[t]).json()["studies"]
        for t in keys
    }
    assert listed["site-a"][0]["result_id"] == first["result"]["id"]
    assert listed["site-b"][0]["result_id"] == other["result"]["id"]
