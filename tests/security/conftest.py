"""A real ``bentoml serve`` in production mode, as the security review attacked it.

Two hospitals, each with its own JWT issuer (``hospital-a``, ``hospital-b``) and API key,
a third issuer with no tenant configured, a configured link key and metrics token, the
NCD fixture models and a tiny chest X-ray model (``cxr-triage`` on), and a SQLite audit
store the tests read directly. Hospital A's issuer lists one FHIR server Tonle may call
back, ``https://127.0.0.1:<port>/r4``: a :class:`FhirListener` that records every
connection made to it. One service per test session: add tests for new findings
against :func:`secure` (see :class:`SecureService` for the clients).
"""

from __future__ import annotations

import secrets
import socket
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from serving.audit import AuditStore
from serving.demo_issuer import ensure_demo_issuer, sign_token
from tests.serving.imaging.cxr_fixtures import served_store
from tests.serving.service_process import TonleProcess

__all__ = ["ISSUERS", "FhirListener", "SecureService", "secure"]

# issuer name -> the tenant configured for it (None: none configured).
ISSUERS: dict[str, str | None] = {
    "https://ehr-a.example": "hospital-a",
    "https://ehr-b.example": "hospital-b",
    "https://ehr-untenanted.example": None,
}
HOSPITAL_A, HOSPITAL_B, UNTENANTED = ISSUERS


class FhirListener:
    """A TCP listener on 127.0.0.1 standing for hospital A's FHIR server: it counts the
    connections made to it and closes each one at once. The service trusts public CAs
    only, so no TLS session (and no bearer token) can reach it; what it shows is whether
    the service connected at all."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.base = f"https://127.0.0.1:{self._socket.getsockname()[1]}/r4"
        self._lock = threading.Lock()
        self._connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def connections(self) -> int:
        """How many connections were made so far."""
        with self._lock:
            return self._connections

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._socket.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._connections += 1
            client.close()

    def close(self) -> None:
        self._socket.close()


@dataclass
class SecureService:
    """The running service and what each hospital holds.

    Attributes:
        process: the ``bentoml serve`` process (``url``, logs).
        database: the audit store's SQLite file.
        api_keys: tenant -> its API key.
        metrics_token: the scraper's bearer token.
        fhir: hospital A's FHIR server (its issuer's only ``fhir_servers`` entry).
    """

    process: TonleProcess
    database: Path
    api_keys: dict[str, str]
    metrics_token: str
    issuer_dirs: dict[str, Path]
    fhir: FhirListener

    @property
    def url(self) -> str:
        """The service's base URL."""
        return self.process.url

    def token(self, path: str, issuer: str = HOSPITAL_A, **claims: Any) -> dict[str, str]:
        """``Authorization`` with a fresh JWT from ``issuer`` for ``path``; extra claims
        are added (``tenant=...``)."""
        jwt = sign_token(
            self.url + path,
            directory=self.issuer_dirs[issuer],
            issuer=issuer,
            extra_claims=claims or None,
        )
        return {"Authorization": f"Bearer {jwt}"}

    def key(self, tenant: str) -> dict[str, str]:
        """``X-API-Key`` of ``tenant``."""
        return {"X-API-Key": self.api_keys[tenant]}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP call to the service."""
        return httpx.request(method, self.url + path, timeout=30, **kwargs)

    def rows(self, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Audit rows read straight from the database."""
        with sqlite3.connect(self.database) as db:
            db.row_factory = sqlite3.Row
            query = f"SELECT * FROM audit_events WHERE {where} ORDER BY id"
            return list(db.execute(query, params))

    def row(self, response: httpx.Response) -> sqlite3.Row:
        """The one audit row of ``response`` (by its ``X-Request-Id``)."""
        found = self.rows("request_id = ?", (response.headers["x-request-id"],))
        assert len(found) == 1, response.text
        return found[0]


def _write_issuers(tmp: Path, fhir: FhirListener) -> tuple[Path, dict[str, Path]]:
    dirs: dict[str, Path] = {}
    config: dict[str, Any] = {}
    for i, (issuer, tenant) in enumerate(ISSUERS.items()):
        directory = tmp / f"issuer-{i}"
        ensure_demo_issuer(directory, fhir_servers=[], tenant=None)
        dirs[issuer] = directory
        entry: dict[str, Any] = {"jwks_file": f"{directory.name}/jwks.json"}
        if tenant is not None:
            entry["tenant"] = tenant
        if issuer == HOSPITAL_A:
            entry["fhir_servers"] = [fhir.base]
        config[issuer] = entry
    path = tmp / "allowed-issuers.yaml"
    path.write_text(yaml.safe_dump({"issuers": config}), encoding="utf-8")
    return path, dirs


@pytest.fixture(scope="session")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureService]:
    """The production-mode service (not ``--dev``), started once per session."""
    tmp = tmp_path_factory.mktemp("secure")
    database = tmp / "audit.db"
    url = f"sqlite:///{database}"
    store = AuditStore.open(url)
    try:
        keys = {t: store.create_api_key(t, f"{t} EHR")[1] for t in ("hospital-a", "hospital-b")}
    finally:
        store.close()
    fhir = FhirListener()
    issuers, dirs = _write_issuers(tmp, fhir)
    token = secrets.token_hex(32)
    # no_advice_card: the site option that shows why no estimate was given.
    home, _, config = served_store(tmp, no_advice_card=True)
    env = {
        "TONLE_ALLOWED_ISSUERS": str(issuers),
        "TONLE_METRICS_TOKEN": token,
        "BENTOML_HOME": str(home),
        "TONLE_SERVING_CONFIG": str(config),
    }
    with TonleProcess(tmp, url, env=env) as process:
        yield SecureService(process, database, keys, token, dirs, fhir)
    fhir.close()
