"""CDS Hooks prefetch: the templates we advertise, and fetching what the EHR left out.

A key that is missing or ``null`` is fetched from ``fhirServer`` with the EHR's
``fhirAuthorization`` only when that server is allowlisted for the calling issuer,
within a deadline; otherwise the call is answered 412 (never computed on partial data).

A search that must be read in full (diagnoses, medications) is paged: its ``next``
links are followed, fetched or EHR-supplied alike, on the same server only and for at
most :data:`MAX_PAGES` pages. A search left with a further page stays incomplete, and
:mod:`serving.fhir_in` then reads what it decides as unknown, never as "no".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

import httpx

from serving.cds_models import CdsRequest

__all__ = [
    "FEATURE_KEYS",
    "MAX_PAGES",
    "TEMPLATES",
    "PrefetchUnavailable",
    "complete_prefetch",
    "keys_for",
    "on_server",
]

logger = logging.getLogger(__name__)

_OBS = "Observation?patient={{context.patientId}}&code=%s&_sort=-date&_count=1"
TEMPLATES: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "sbp": _OBS % "http://loinc.org|8480-6,http://loinc.org|85354-9",
    "dbp": _OBS % "http://loinc.org|8462-4,http://loinc.org|85354-9",
    "totalChol": _OBS % "http://loinc.org|2093-3",
    "hdl": _OBS % "http://loinc.org|2085-9",
    "hba1c": _OBS % "http://loinc.org|4548-4",
    "bmi": _OBS % "http://loinc.org|39156-5",
    "smoking": _OBS % "http://loinc.org|72166-2",
    "fastingGlucose": _OBS % "http://loinc.org|1558-6",
    # Every status: models.diabetes_status judges clinicalStatus itself, and a Condition
    # without one (an encounter diagnosis) counts by its dates, as in training.
    "diabetes": "Condition?patient={{context.patientId}}&_count=100",
    "medicationStatements": (
        "MedicationStatement?patient={{context.patientId}}&status=active"
        "&_include=MedicationStatement:medication&_count=100"
    ),
    "medicationRequests": (
        "MedicationRequest?patient={{context.patientId}}&status=active"
        "&_include=MedicationRequest:medication&_count=100"
    ),
}
# Which prefetch keys a feature needs (models.diabetes_status reads diagnoses, drugs
# used in diabetes, HbA1c and fasting glucose).
FEATURE_KEYS: dict[str, tuple[str, ...]] = {
    "sex": ("patient",),
    "age": ("patient",),
    "sbp": ("sbp",),
    "dbp": ("dbp",),
    "total_chol": ("totalChol",),
    "hdl": ("hdl",),
    "hba1c": ("hba1c",),
    "bmi": ("bmi",),
    "smoking": ("smoking",),
    "fasting_glucose": ("fastingGlucose",),
    "diabetes": (
        "diabetes",
        "hba1c",
        "fastingGlucose",
        "medicationStatements",
        "medicationRequests",
    ),
    "bp_treated": ("medicationStatements", "medicationRequests"),
}
# The WHO chart inputs (both lab and non-lab models).
WHO_FEATURES = ("sex", "age", "smoking", "sbp", "total_chol", "diabetes", "bmi")
_MAX_RESOURCE_BYTES = 1 << 20
# Searches whose every page counts: the shared diabetes and blood-pressure-treatment
# rules say "no" only on complete data. (An Observation search wants its latest value,
# page 1 of ``_sort=-date``.)
_READ_IN_FULL = frozenset({"diabetes", "medicationStatements", "medicationRequests"})
MAX_PAGES = 10  # pages read per search (``_count=100``: 1000 resources); beyond, incomplete


class PrefetchUnavailable(Exception):
    """Prefetch is incomplete and cannot be fetched: answered 412 (``reason`` is a code)."""

    def __init__(self, reason: str, keys: Iterable[str]) -> None:
        self.reason = reason
        self.keys = sorted(keys)
        super().__init__(f"{reason}: {', '.join(self.keys)}")


def keys_for(features: Iterable[str], with_who: bool, outcome: str | None = None) -> list[str]:
    """Prefetch keys a service needs for its model's features (and the WHO chart).

    Args:
        features: The model's input features.
        with_who: The service also shows the WHO chart (needs its inputs).
        outcome: The model's outcome. A diabetes-risk service needs what tells whether
            the patient already has diabetes (``already-has-outcome``), even though
            its model does not take ``diabetes`` as an input.
    """
    wanted = {"patient"}
    outcome_features = ("diabetes",) if outcome == "diabetes" else ()
    for name in [*features, *(WHO_FEATURES if with_who else ()), *outcome_features]:
        wanted.update(FEATURE_KEYS.get(name, ()))
    return [key for key in TEMPLATES if key in wanted]


def _query(key: str, patient_id: str) -> str:
    return TEMPLATES[key].replace("{{context.patientId}}", patient_id)


def _plain_path(raw_path: bytes) -> bool:
    """No segment of a percent-encoded path is a dot segment or hides a separator once
    decoded (``%2e%2e``, ``.%2E``, ``%2F``, ``%5C``): the decoded path is then the path a
    server resolves, so comparing it says where a request really goes."""
    path = raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    for segment in path.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded:
            return False
    return True


def on_server(url: str, base: str) -> bool:
    """Whether ``url`` is on the FHIR server at ``base``: same scheme, host and port, at
    or under its path, no user info, and no encoded dot segment or separator in its
    path (``/r4/%2e%2e/admin`` decodes to a path under ``/r4``, but a server resolves
    it to ``/admin``). The EHR's token is only ever sent there."""
    try:
        target, root = httpx.URL(url), httpx.URL(base)
    except httpx.InvalidURL:
        return False
    path = root.path.rstrip("/")
    return (
        _plain_path(target.raw_path)
        and target.scheme == root.scheme
        and target.host == root.host
        and target.port == root.port
        and not target.userinfo
        and (target.path == path or target.path.startswith(f"{path}/"))
    )


def _next_url(value: dict[str, Any]) -> str | None:
    links = value.get("link") if value.get("resourceType") == "Bundle" else None
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) else ""
    return None


async def _get(client: httpx.AsyncClient, url: str, key: str, token: str) -> dict[str, Any]:
    response = await client.get(
        url, headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    )
    if response.status_code != 200 or len(response.content) > _MAX_RESOURCE_BYTES:
        raise PrefetchUnavailable("fetch-failed", [key])
    try:
        value = json.loads(response.content)
    except ValueError as exc:
        raise PrefetchUnavailable("fetch-failed", [key]) from exc
    if not isinstance(value, dict):
        raise PrefetchUnavailable("fetch-failed", [key])
    return value


async def _read_in_full(
    client: httpx.AsyncClient, base: str, key: str, first: dict[str, Any], token: str
) -> dict[str, Any]:
    """``first`` with the entries of its further pages, and the last page's links (a
    ``next`` among them leaves the search incomplete)."""
    entries = first.get("entry") or []
    if not isinstance(entries, list):
        return first  # malformed: serving.fhir_in refuses it
    entries = list(entries)
    page = first
    for _ in range(MAX_PAGES - 1):
        url = _next_url(page)
        if url is None:
            break
        if not on_server(url, base):
            logger.warning("prefetch %s: next page is not on fhirServer; not followed", key)
            break
        page = await _get(client, url, key, token)
        more = page.get("entry") or []
        if page.get("resourceType") != "Bundle" or not isinstance(more, list):
            raise PrefetchUnavailable("fetch-failed", [key])
        entries.extend(more)
    else:
        if _next_url(page) is not None:
            logger.warning("prefetch %s: more than %d pages; left incomplete", key, MAX_PAGES)
    if page is first:
        return first
    return {**first, "entry": entries, "link": page.get("link", [])}


async def complete_prefetch(
    request: CdsRequest,
    keys: list[str],
    *,
    server_allowed: Callable[[str], bool],
    timeout_s: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, dict[str, Any] | None]:
    """The prefetch with every needed key present, fetching missing ones and the further
    pages of searches read in full when allowed.

    Args:
        request: The CDS Hooks call.
        keys: Keys the service needs.
        server_allowed: Whether the caller may have us contact ``fhirServer``.
        timeout_s: Deadline for all fetches together.
        transport: httpx transport (tests).

    Raises:
        PrefetchUnavailable: ``prefetch-missing`` when we may not fetch,
            ``fetch-failed`` when fetching (a key or one of its pages) did not succeed
            in time.
    """
    prefetch = dict(request.prefetch)
    missing = [key for key in keys if prefetch.get(key) is None]
    paged = [
        key
        for key in keys
        if key in _READ_IN_FULL and (value := prefetch.get(key)) and _next_url(value) is not None
    ]
    if not missing and not paged:
        return prefetch
    server, auth = request.fhirServer, request.fhirAuthorization
    if (
        server is None
        or auth is None
        or not server.startswith("https://")
        or not server_allowed(server)
    ):
        if missing:
            raise PrefetchUnavailable("prefetch-missing", missing)
        return prefetch  # the further pages stay unread: those searches are incomplete
    patient_id = request.context.patientId
    token = auth.access_token

    async def read(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
        value = prefetch.get(key)
        if value is None:
            value = await _get(
                client, f"{server.rstrip('/')}/{_query(key, patient_id)}", key, token
            )
        if key in _READ_IN_FULL:
            value = await _read_in_full(client, server, key, value, token)
        return value

    wanted = [*missing, *paged]
    try:
        async with httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, transport=transport, trust_env=False
        ) as client:
            async with asyncio.timeout(timeout_s):
                fetched = await asyncio.gather(*(read(client, key) for key in wanted))
    except PrefetchUnavailable:
        raise
    except (httpx.HTTPError, TimeoutError) as exc:
        logger.warning("fetching prefetch failed: %s", type(exc).__name__)
        raise PrefetchUnavailable("fetch-failed", wanted) from exc
    prefetch.update(zip(wanted, fetched, strict=True))
    return prefetch
