"""Searches read in full are paged over real HTTPS: the pages together read as one big
page, at most MAX_PAGES of them, only on fhirServer, and a failing page is a failing
fetch."""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.cds_models import CdsRequest
from serving.fhir_in import Extracted, extract
from serving.prefetch import MAX_PAGES, TEMPLATES, PrefetchUnavailable, complete_prefetch, on_server
from tests.serving.fhir_stub import FhirStub, self_signed, serve_fhir

TODAY = date(2026, 11, 25)
SEARCH = "/r4/" + TEMPLATES["diabetes"].replace("{{context.patientId}}", "p1")
TOKEN = "secret-token"
KEYS = ["diabetes", "medicationStatements", "medicationRequests"]


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    entries = [{"resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def _condition(cid: str, snomed: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": snomed}]},
        "onsetDateTime": "2020-01-01",
    }


HYPERTENSION = [_condition(f"htn{i}", "38341003") for i in range(5)]
WITH_DIABETES = [*HYPERTENSION, _condition("dm", "44054006")]  # diabetes on the last page


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def stub(cert: tuple[Path, Path]) -> Iterator[FhirStub]:
    with serve_fhir(*cert) as served:
        yield served


def _paged(stub: FhirStub, resources: list[dict[str, Any]], pages: int) -> dict[str, Any]:
    """``resources`` as ``pages`` Bundles chained by next links, served by ``stub`` (page 1
    at the prefetch query); returns page 1."""
    size = math.ceil(len(resources) / pages)
    bundles = [_bundle(*resources[i * size : (i + 1) * size]) for i in range(pages)]
    for number, bundle in enumerate(bundles[:-1], start=2):
        url = f"{stub.base}/Condition?patient=p1&page={number}"
        bundle["link"] = [{"relation": "self", "url": "x"}, {"relation": "next", "url": url}]
        stub.routes[f"/r4/Condition?patient=p1&page={number}"] = bundles[number - 1]
    stub.routes[SEARCH] = bundles[0]
    return bundles[0]


def _complete(
    stub: FhirStub, cert: Path, diabetes: dict[str, Any] | None, allowed: bool = True
) -> dict[str, dict[str, Any] | None]:
    request = CdsRequest.model_validate(
        {
            "hook": "patient-view",
            "hookInstance": "h1",
            "fhirServer": stub.base,
            "fhirAuthorization": {
                "access_token": TOKEN,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/*.read",
                "subject": "tonle",
            },
            "context": {"userId": "Practitioner/1", "patientId": "p1"},
            "prefetch": {
                "diabetes": diabetes,
                "medicationStatements": _bundle(),
                "medicationRequests": _bundle(),
            },
        }
    )
    transport = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=cert))
    return asyncio.run(
        complete_prefetch(
            request,
            KEYS,
            server_allowed=lambda server: allowed and server == stub.base,
            timeout_s=5.0,
            transport=transport,
        )
    )


def _read(diabetes: dict[str, Any] | None) -> Extracted:
    return extract(
        {"diabetes": diabetes, "medicationStatements": _bundle(), "medicationRequests": _bundle()},
        TODAY,
    )


@pytest.mark.parametrize("pages", [2, 3])
@pytest.mark.parametrize("supplied", [True, False], ids=["ehr-prefetch", "fetched"])
@pytest.mark.parametrize(
    ("resources", "diabetes"), [(WITH_DIABETES, 1.0), (HYPERTENSION, 0.0)], ids=["dm", "no-dm"]
)
def test_pages_read_as_one_big_page(
    stub: FhirStub,
    cert: tuple[Path, Path],
    pages: int,
    supplied: bool,
    resources: list[dict[str, Any]],
    diabetes: float,
) -> None:
    first = _paged(stub, resources, pages)
    assert "diabetes" not in _read(first).values  # page 1 alone: unknown
    merged = _complete(stub, cert[0], first if supplied else None)["diabetes"]
    found, big = _read(merged), _read(_bundle(*resources))
    assert found.values["diabetes"] == diabetes
    assert (found.values, found.sources, found.prior) == (big.values, big.sources, big.prior)
    assert len(stub.seen) == (pages - 1 if supplied else pages)
    assert set(stub.tokens) == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("pages", "diabetes"), [(MAX_PAGES, 0.0), (MAX_PAGES + 1, None)])
def test_at_most_max_pages_then_unknown(
    stub: FhirStub,
    cert: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
    pages: int,
    diabetes: float | None,
) -> None:
    conditions = [_condition(f"htn{i}", "38341003") for i in range(pages)]
    _paged(stub, conditions, pages)
    with caplog.at_level(logging.WARNING, logger="serving.prefetch"):
        merged = _complete(stub, cert[0], None)["diabetes"]
    assert len(stub.seen) == MAX_PAGES
    assert merged is not None
    assert len(merged["entry"]) == MAX_PAGES
    assert _read(merged).values.get("diabetes") == diabetes
    if diabetes is None:  # the unread page is still named: the search is incomplete
        assert [link["relation"] for link in merged["link"]] == ["self", "next"]
        assert "more than 10 pages" in caplog.text


def test_next_page_on_another_server_is_not_followed(
    stub: FhirStub, cert: tuple[Path, Path]
) -> None:
    with serve_fhir(*cert) as foreign:
        first = _paged(stub, WITH_DIABETES, 2)
        first["link"][1]["url"] = f"{foreign.base}/Condition?patient=p1&page=2"
        foreign.routes["/r4/Condition?patient=p1&page=2"] = _bundle(WITH_DIABETES[-1])
        merged = _complete(stub, cert[0], first)["diabetes"]
        assert foreign.seen == []  # the token never went there
    assert stub.seen == []
    assert "diabetes" not in _read(merged).values


@pytest.mark.parametrize(
    ("url", "on"),
    [
        ("https://fhir.example/r4/Condition?page=2", True),
        ("https://fhir.example:443/r4?_getpages=abc", True),
        ("https://FHIR.example/r4/Condition", True),
        ("https://evil.example/r4/Condition?page=2", False),
        ("https://fhir.example.evil.example/r4/Condition", False),
        ("https://fhir.example:8443/r4/Condition", False),
        ("http://fhir.example/r4/Condition", False),
        ("https://fhir.example/r5/Condition", False),
        ("https://fhir.example/r4x/Condition", False),
        ("https://fhir.example/r4/../admin", False),
        # Decoded, these look under /r4; a server resolves them elsewhere (the EHR's
        # token went to /admin/secret).
        ("https://fhir.example/r4/%2e%2e/%2e%2e/admin/secret", False),
        ("https://fhir.example/r4/.%2E/admin", False),
        ("https://fhir.example/r4/%2E/Condition", False),
        ("https://fhir.example/r4/Condition%2F..%2F..%2Fadmin", False),
        ("https://fhir.example/r4/Condition%5C..%5Cadmin", False),
        ("https://fhir.example/r4/Condition?page=%2e%2e", True),  # the query is data
        ("https://user@fhir.example/r4/Condition", False),
        ("https://fhir.example\\@evil.example/r4/Condition", False),
        ("/r4/Condition?page=2", False),
        ("https://[bad", False),
    ],
)
def test_on_server(url: str, on: bool) -> None:
    assert on_server(url, "https://fhir.example/r4/") is on


@pytest.mark.parametrize("supplied", [True, False], ids=["page-2-fails", "page-1-fails"])
def test_a_failing_page_is_a_failing_fetch(
    stub: FhirStub, cert: tuple[Path, Path], supplied: bool
) -> None:
    first = _paged(stub, WITH_DIABETES, 3)
    stub.routes["/r4/Condition?patient=p1&page=3" if supplied else SEARCH] = 500
    with pytest.raises(PrefetchUnavailable) as caught:
        _complete(stub, cert[0], first if supplied else None)
    assert (caught.value.reason, caught.value.keys) == ("fetch-failed", ["diabetes"])


def test_server_not_allowed_leaves_the_search_incomplete(
    stub: FhirStub, cert: tuple[Path, Path]
) -> None:
    first = _paged(stub, WITH_DIABETES, 2)
    done = _complete(stub, cert[0], first, allowed=False)
    assert stub.seen == []
    assert done["diabetes"] == first  # unchanged
    assert "diabetes" not in _read(done["diabetes"]).values
