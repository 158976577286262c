"""The security review's input findings, against the production-mode service: text from
the EHR never becomes markdown in a card, FHIR references are built only from FHIR ids,
dates off the calendar are a 4xx (they were a 500), and a measurement dated in the future
does not count as a fresh one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.security.conftest import SecureService
from tests.serving.cds_fixtures import cds_request, prefetch

CVD = "/cds-services/ncd-cvd-risk"


def _call(secure: SecureService, body: dict[str, Any]) -> Any:
    return secure.request("POST", CVD, json=body, headers=secure.token(CVD))


def _chol(pf: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = pf["totalChol"]["entry"][0]["resource"]
    return resource


def test_markdown_from_the_ehr_is_inert_in_cards(secure: SecureService) -> None:
    for unit in ("[Fix](https://example.org)", "![](http://example.org/p)"):
        pf = prefetch()
        _chol(pf)["valueQuantity"].update(unit=unit, code=unit)
        response = _call(secure, cds_request(pf))
        assert response.status_code == 200, response.text
        (card,) = response.json()["cards"]  # the no-advice card names the unreadable unit
        assert "](http" not in card["detail"]
        assert unit not in card["detail"]


def test_references_are_built_only_from_fhir_ids(secure: SecureService) -> None:
    body = cds_request(prefetch())
    body["context"]["encounterId"] = "../Patient/x"
    response = _call(secure, body)
    assert response.status_code == 400
    assert response.json()["field"] == "context.encounterId"


def test_a_date_off_the_calendar_is_a_4xx(secure: SecureService) -> None:
    pf = prefetch()
    pf["sbp"]["entry"][0]["resource"]["effectiveDateTime"] = "9999-12-31T23:00:00-05:00"
    response = _call(secure, cds_request(pf))
    assert response.status_code == 400
    assert response.json()["field"] == "prefetch.sbp"


def test_a_future_measurement_is_not_fresh(secure: SecureService) -> None:
    pf = prefetch()
    future = (datetime.now(UTC) + timedelta(days=400)).isoformat(timespec="seconds")
    pf["sbp"]["entry"][0]["resource"]["effectiveDateTime"] = future
    response = _call(secure, cds_request(pf))
    assert response.status_code == 200, response.text
    row = secure.row(response)
    assert (row["outcome"], row["reason"]) == ("no-advice", "future-dated:sbp")
