"""The security review's chest X-ray findings, against the production-mode service.

Patient ids are unique only within one EHR: hospital B must never see hospital A's read,
by result id, as FHIR, or through its own ``cxr-triage`` call for the same patient id.
Files whose compressed codestream declares far more pixels than their header are refused
before any decoder allocates, and no mutated file gets a server error.
"""

from __future__ import annotations

import pytest

from tests.security.conftest import HOSPITAL_B, SecureService
from tests.serving.imaging.cxr_fixtures import dicom_bytes

cases = pytest.importorskip("training.cxr_bad_inputs")

DICOM = {"Content-Type": "application/dicom"}
SHARED_PATIENT = "SHARED-1"


def _hook(patient: str) -> dict[str, object]:
    return {
        "hook": "patient-view",
        "hookInstance": "8d3c8b1e-2f43-4b8a-9d7e-3c4f5a6b7c8d",
        "context": {"userId": "Practitioner/1", "patientId": patient},
        "prefetch": {},
    }


@pytest.fixture(scope="module")
def read_of_a(secure: SecureService) -> dict[str, object]:
    """Hospital A's read of its patient SHARED-1, posted with A's API key."""
    posted = secure.request(
        "POST",
        f"/v1/imaging/cxr?patient={SHARED_PATIENT}",
        content=dicom_bytes(patient_id=SHARED_PATIENT),
        headers={**secure.key("hospital-a"), **DICOM},
    )
    assert posted.status_code == 200, posted.text
    body: dict[str, object] = posted.json()
    return body


def test_another_hospital_cannot_read_a_result(
    secure: SecureService, read_of_a: dict[str, object]
) -> None:
    path = f"/v1/imaging/results/{read_of_a['id']}"
    for suffix in ("", "/fhir"):
        own = secure.request("GET", path + suffix, headers=secure.key("hospital-a"))
        theirs = secure.request("GET", path + suffix, headers=secure.key("hospital-b"))
        unknown = secure.request(
            "GET", "/v1/imaging/results/" + "0" * 32 + suffix, headers=secure.key("hospital-b")
        )
        assert own.status_code == 200, own.text
        # Another hospital's read answers exactly like one that does not exist.
        assert (theirs.status_code, theirs.content) == (unknown.status_code, unknown.content)
        assert theirs.status_code == 404


def test_cxr_triage_finds_only_the_callers_hospitals_read(
    secure: SecureService, read_of_a: dict[str, object]
) -> None:
    path = "/cds-services/cxr-triage"
    own = secure.request("POST", path, json=_hook(SHARED_PATIENT), headers=secure.token(path))
    other = secure.request(
        "POST", path, json=_hook(SHARED_PATIENT), headers=secure.token(path, HOSPITAL_B)
    )
    assert own.status_code == 200, own.text
    assert len(own.json()["cards"]) == 1
    assert other.status_code == 200, other.text
    assert other.json()["cards"] == []  # B's SHARED-1 is another person
    assert secure.row(other)["caller_tenant"] == "hospital-b"
    assert secure.row(own)["caller_tenant"] == "hospital-a"


@pytest.mark.parametrize("case", cases.bomb_cases(), ids=lambda c: c.name)
def test_decompression_bombs_are_refused_with_a_reason(secure: SecureService, case: object) -> None:
    media = "application/dicom" if case.media == "dicom" else "image/png"  # type: ignore[attr-defined]
    response = secure.request(
        "POST",
        "/v1/imaging/cxr",
        content=case.data,  # type: ignore[attr-defined]
        headers={**secure.key("hospital-a"), "Content-Type": media},
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["reason"] in case.expected  # type: ignore[attr-defined]


def test_every_answer_is_audited_under_the_callers_hospital(
    secure: SecureService, read_of_a: dict[str, object]
) -> None:
    """One pipeline for every route: the results, a miss, the heatmap and the X-ray
    page opened by signed link, and discovery each leave after their row, which names
    the hospital (a link's holder: the hospital the read was made for)."""
    path = f"/v1/imaging/results/{read_of_a['id']}"
    heatmap = str(read_of_a["heatmap_url"]).removeprefix(secure.url)
    own = secure.request("GET", path, headers=secure.key("hospital-a"))
    miss = secure.request("GET", path, headers=secure.key("hospital-b"))
    opened = secure.request("GET", heatmap)
    discovery = secure.request("GET", "/cds-services", headers=secure.token("/cds-services"))
    rows = {
        name: secure.row(response)
        for name, response in {
            "own": own,
            "miss": miss,
            "heatmap": opened,
            "discovery": discovery,
        }.items()
    }
    seen = {n: (r["service_id"], r["outcome"], r["caller_tenant"]) for n, r in rows.items()}
    assert seen == {
        "own": ("imaging-result", "read", "hospital-a"),
        "miss": ("imaging-result", "refused", "hospital-b"),
        "heatmap": ("imaging-heatmap", "read", "hospital-a"),
        "discovery": ("cds-discovery", "discovery", "hospital-a"),
    }
    assert rows["heatmap"]["caller_iss"] == "tonle-link"
    assert rows["miss"]["input_sha256"] is None  # nothing of A's read in B's row
