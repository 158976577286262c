"""The prefetch ``next``-link finding, against the production-mode service: a FHIR Bundle
page link is followed (with the EHR's bearer token) only when it lies under the
``fhirServer`` the EHR named and the issuer lists. A link that reaches another path by
percent-encoded dot segments (``/r4/%2e%2e/%2e%2e/admin/secret``) is not followed: the
service makes no connection for it at all, so the token cannot reach it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.security.conftest import SecureService
from tests.serving.cds_fixtures import cds_request, prefetch

CVD = "/cds-services/ncd-cvd-risk"


def _call_with_next(secure: SecureService, next_url: str) -> Any:
    """Hospital A's patient-view call whose ``diabetes`` search has a further page."""
    pf = prefetch()
    pf["diabetes"]["link"] = [{"relation": "next", "url": next_url}]
    body = cds_request(
        pf,
        fhirServer=secure.fhir.base,
        fhirAuthorization={
            "access_token": "ehr-secret-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Condition.read",
            "subject": "tonle",
        },
    )
    return secure.request("POST", CVD, json=body, headers=secure.token(CVD))


def test_a_next_page_on_the_fhir_server_is_followed(secure: SecureService) -> None:
    """The control: a page under ``fhirServer`` is fetched (the service connects; the
    listener holds no certificate it trusts, so the search cannot be completed)."""
    before = secure.fhir.connections
    response = _call_with_next(secure, f"{secure.fhir.base}/Condition?patient=p1&page=2")
    assert secure.fhir.connections > before
    assert response.status_code == 412, response.text
    assert secure.row(response)["reason"] == "fetch-failed"


@pytest.mark.parametrize(
    "path",
    [
        "/%2e%2e/%2e%2e/admin/secret",
        "/.%2E/admin",
        "/Condition%2F..%2F..%2Fadmin",
        "/Condition%5C..%5Cadmin",
    ],
)
def test_a_next_link_out_of_the_fhir_base_gets_no_token(secure: SecureService, path: str) -> None:
    before = secure.fhir.connections
    response = _call_with_next(secure, secure.fhir.base + path)
    assert response.status_code == 200, response.text  # answered without that page
    assert secure.fhir.connections == before
    assert secure.row(response)["outcome"] in ("advice", "no-advice")
