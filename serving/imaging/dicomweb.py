"""A small DICOMweb client (httpx): QIDO-RS search, WADO-RS retrieve, STOW-RS store.

Only what Tonle needs, against the standard's URLs (PS3.18):

* QIDO-RS ``GET {base}/studies?...`` and ``GET {base}/studies/{study}/instances``;
* WADO-RS ``GET {base}/studies/{study}/series/{series}/instances/{sop}`` with
  ``Accept: multipart/related; type="application/dicom"``;
* STOW-RS ``POST {base}/studies/{study}`` with a ``multipart/related`` body.

Responses are bounded in size; every failure is a :class:`DicomWebError` with a
reason code (no PHI in messages).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Any

import httpx

from serving.imaging.config import DicomWebConfig

__all__ = ["DicomWebClient", "DicomWebError", "Instance", "parse_multipart", "tag_value"]

_DICOM_PART = 'multipart/related; type="application/dicom"'
_MAX_RESPONSE = 256 * 1024**2
_UID = re.compile(r"^[0-9.]{1,64}$")


class DicomWebError(Exception):
    """A DICOMweb call failed; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_uid(uid: str, name: str = "uid") -> str:
    """Return ``uid`` if it is a DICOM UID (digits and dots, <= 64 chars).

    Raises:
        DicomWebError: it is not, so it must never be put in a URL.
    """
    if not _UID.match(uid):
        raise DicomWebError("invalid-uid", f"{name} is not a DICOM UID")
    return uid


def tag_value(item: dict[str, Any], tag: str) -> str | None:
    """First value of a DICOM JSON attribute (``"0020000D"``), as text."""
    values = item.get(tag, {}).get("Value") or []
    if not values:
        return None
    value = values[0]
    if isinstance(value, dict):  # PN
        return str(value.get("Alphabetic", ""))
    return str(value)


class Instance:
    """One instance found by QIDO-RS."""

    def __init__(self, study: str, series: str, sop: str, modality: str | None) -> None:
        self.study = study
        self.series = series
        self.sop = sop
        self.modality = modality


def parse_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The parts of a ``multipart/related`` body.

    Raises:
        DicomWebError: no boundary, or a malformed body.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise DicomWebError("bad-multipart", "multipart response without a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    parts: list[bytes] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        _head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise DicomWebError("bad-multipart", "multipart part without headers")
        parts.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return parts


class DicomWebClient:
    """Synchronous DICOMweb client for one PACS."""

    def __init__(self, config: DicomWebConfig, transport: httpx.BaseTransport | None = None):
        auth = None
        if config.username:
            password = os.environ.get(config.password_env or "", "")
            auth = httpx.BasicAuth(config.username, password)
        self.base = config.base_url.rstrip("/")
        self.client = httpx.Client(
            timeout=config.timeout_s, auth=auth, transport=transport, follow_redirects=False
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def _get(
        self, url: str, accept: str, params: dict[str, str] | None = None
    ) -> tuple[int, str, bytes]:
        """Status, content type and body (bounded) of a GET."""
        try:
            with self.client.stream("GET", url, headers={"Accept": accept}, params=params) as r:
                if r.status_code >= 400:
                    raise DicomWebError("pacs-error", f"PACS answered {r.status_code} to GET")
                data = bytearray()
                for chunk in r.iter_bytes():
                    data.extend(chunk)
                    if len(data) > _MAX_RESPONSE:
                        raise DicomWebError("pacs-too-large", "PACS response too large")
                return r.status_code, r.headers.get("content-type", ""), bytes(data)
        except httpx.HTTPError as exc:
            raise DicomWebError(
                "pacs-unreachable", f"PACS request failed: {type(exc).__name__}"
            ) from exc

    def _json(self, url: str, params: dict[str, str]) -> list[dict[str, Any]]:
        status, _, body = self._get(url, "application/dicom+json", params)
        if status == 204 or not body.strip():
            return []
        try:
            found = json.loads(body)
        except ValueError as exc:
            raise DicomWebError("pacs-error", "PACS answered QIDO-RS with invalid JSON") from exc
        if not isinstance(found, list):
            raise DicomWebError("pacs-error", "PACS answered QIDO-RS with a non-list")
        return [item for item in found if isinstance(item, dict)]

    def search_studies(self, **filters: str) -> list[dict[str, Any]]:
        """QIDO-RS study search, e.g. ``search_studies(PatientID="P1")``."""
        return self._json(f"{self.base}/studies", dict(filters))

    def search_instances(self, study: str, series: str | None = None) -> list[Instance]:
        """QIDO-RS instances of a study (optionally one series), with their modality."""
        url = f"{self.base}/studies/{check_uid(study, 'study')}"
        if series:
            url += f"/series/{check_uid(series, 'series')}"
        found: list[Instance] = []
        for item in self._json(f"{url}/instances", {"includefield": "00080060"}):
            series_uid = tag_value(item, "0020000E")
            sop = tag_value(item, "00080018")
            if series_uid and sop:
                found.append(Instance(study, series_uid, sop, tag_value(item, "00080060")))
        return found

    def retrieve_instance(self, instance: Instance) -> bytes:
        """WADO-RS retrieve of one instance as DICOM Part 10 bytes."""
        url = (
            f"{self.base}/studies/{check_uid(instance.study)}/series/"
            f"{check_uid(instance.series)}/instances/{check_uid(instance.sop)}"
        )
        _, content_type, body = self._get(url, f"{_DICOM_PART}; transfer-syntax=*")
        parts = parse_multipart(body, content_type)
        if len(parts) != 1:
            raise DicomWebError("bad-multipart", f"expected one instance, got {len(parts)}")
        return parts[0]

    def store(self, study: str, instances: list[bytes]) -> dict[str, Any]:
        """STOW-RS the Part 10 ``instances`` into ``study``; returns the PACS's answer.

        Raises:
            DicomWebError: the PACS refused some or all instances.
        """
        boundary = uuid.uuid4().hex
        body = (
            b"".join(
                b"--"
                + boundary.encode()
                + b"\r\nContent-Type: application/dicom\r\n\r\n"
                + data
                + b"\r\n"
                for data in instances
            )
            + b"--"
            + boundary.encode()
            + b"--\r\n"
        )
        headers = {
            "Content-Type": f'{_DICOM_PART}; boundary="{boundary}"',
            "Accept": "application/dicom+json",
        }
        try:
            response = self.client.post(
                f"{self.base}/studies/{check_uid(study)}", content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise DicomWebError(
                "pacs-unreachable", f"STOW-RS failed: {type(exc).__name__}"
            ) from exc
        if response.status_code not in (200, 202):
            raise DicomWebError("stow-refused", f"PACS answered {response.status_code} to STOW")
        try:
            answer: dict[str, Any] = response.json() if response.content else {}
        except ValueError:
            answer = {}
        if answer.get("00081198", {}).get("Value"):  # FailedSOPSequence with items
            raise DicomWebError("stow-refused", "PACS refused some instances")
        return answer
