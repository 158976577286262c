"""Reads belong to the tenant whose caller made them: two hospitals, one service.

Hospital A and hospital B each have an API key (real keys in the audit store) and a
CDS Hooks issuer. Patient ids are unique only within one EHR, so both have a patient
``SHARED-1``. B must never see A's read: 404 on the result routes (like an unknown
id, so B cannot tell that it exists) and no card from ``cxr-triage``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from serving.auth import ApiKeyAuthenticator, AuthError, Caller
from tests.serving.imaging.conftest import AppFactory, Client, LockableAudit
from tests.serving.imaging.cxr_fixtures import dicom_bytes

DICOM = {"content-type": "application/dicom"}
_A, _B = "hospital-a", "hospital-b"


class _TwoIssuers:
    """CDS Hooks auth for two EHRs: the bearer token names the issuer of each hospital."""

    def __init__(self) -> None:
        self.callers = {
            f"Bearer {tenant}": Caller(
                iss=f"https://ehr.{tenant}.example", sub="ehr", tenant=tenant, kind="jwt"
            )
            for tenant in (_A, _B)
        }

    async def authenticate(self, authorization: str | None, endpoint_url: str) -> Any:
        if authorization not in self.callers:
            raise AuthError("unknown issuer")
        return self.callers[authorization]


@dataclass
class _World:
    client: Client
    state: Any
    keys: dict[str, dict[str, str]]  # tenant -> X-API-Key header


@pytest.fixture
def world(make_app: AppFactory, audit: LockableAudit) -> _World:
    keys = {t: {"x-api-key": audit.create_api_key(t, "pacs")[1]} for t in (_A, _B)}
    client, state = make_app(dev=False, authenticator=ApiKeyAuthenticator(audit))
    client.app.state.runtime.cds_auth = _TwoIssuers()
    return _World(client, state, keys)


def _post(world: _World, tenant: str, patient: str = "SHARED-1") -> dict[str, Any]:
    response = world.client.post(
        f"/v1/imaging/cxr?patient={patient}",
        content=dicom_bytes(),
        headers=DICOM | world.keys[tenant],
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("suffix", ["", "/fhir"])
def test_another_tenants_result_is_not_found(
    world: _World, audit: LockableAudit, suffix: str
) -> None:
    read = _post(world, _A)
    url = f"/v1/imaging/results/{read['id']}{suffix}"
    mine = world.client.get(url, headers=world.keys[_A])
    theirs = world.client.get(url, headers=world.keys[_B])
    unknown = world.client.get(f"/v1/imaging/results/{'0' * 32}{suffix}", headers=world.keys[_B])
    assert mine.status_code == 200
    assert read["id"] in mine.text
    # B learns nothing: the same answer as for an id that does not exist.
    assert (theirs.status_code, theirs.content) == (unknown.status_code, unknown.content)
    assert theirs.status_code == 404
    # The read stored A's tenant; A's read of it is audited. B's miss is audited too,
    # as refused, and its row is that of any unknown id: nothing of A's read in it.
    rows = audit.rows()
    assert [(r.outcome, r.caller_tenant, r.reason) for r in rows] == [
        ("advice", _A, None),
        ("read", _A, None),
        ("refused", _B, "not-found"),
        ("refused", _B, "not-found"),
    ]
    assert rows[1].input_sha256 == read["input_sha256"]
    assert [(r.input_sha256, r.patient_ref) for r in rows[2:]] == [(None, None)] * 2


def _hook(patient: str) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": patient},
        "prefetch": {},
    }


def test_cxr_triage_matches_patients_within_the_callers_tenant(world: _World) -> None:
    """A's patient SHARED-1 is not B's patient SHARED-1: no card for B, then B's own."""

    def cards(tenant: str) -> list[dict[str, Any]]:
        response = world.client.post(
            "/cds-services/cxr-triage",
            json=_hook("SHARED-1"),
            headers={"authorization": f"Bearer {tenant}"},
        )
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["cards"]
        return found

    a_read = _post(world, _A)
    (card,) = cards(_A)
    assert a_read["id"] in card["links"][1]["url"]
    assert cards(_B) == []
    b_read = _post(world, _B)
    (b_card,) = cards(_B)
    assert b_read["id"] in b_card["links"][1]["url"]
    (still_a,) = cards(_A)
    assert a_read["id"] in still_a["links"][1]["url"]


def test_heatmap_links_come_only_from_a_scoped_lookup(world: _World) -> None:
    """The signed heatmap link is minted for one read, after the tenant check; B's
    lookup gives no link, and A's link opens (it names that one read only)."""
    read = _post(world, _A)
    heatmap = read["heatmap_url"].removeprefix("https://tonle.test")
    assert world.client.get(heatmap).status_code == 200
    theirs = world.client.get(f"/v1/imaging/results/{read['id']}", headers=world.keys[_B])
    assert "heatmap_url" not in theirs.json()
