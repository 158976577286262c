"""One real ``bentoml serve`` with a chest X-ray model: API-key auth, DICOM in, heatmap out,
the cxr-triage service in discovery. The service runs without --dev."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from models.registry import StoredModel
from serving.audit import AuditStore
from serving.demo_issuer import ensure_demo_issuer, sign_token
from tests.serving.imaging.cxr_fixtures import dicom_bytes

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_real_service_analyses_a_dicom_with_an_api_key(
    tiny_cxr: StoredModel, model_store: Path, tmp_path: Path
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    config = {
        "models": {"cxr-triage": tiny_cxr.metadata.version},
        "imaging": {"model": "cxr-triage"},
    }
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    database_url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = AuditStore.open(database_url)
    _, secret = store.create_api_key("hospital-a", "imaging e2e")
    # The EHR's issuer belongs to the hospital whose PACS key posted the image: reads
    # are matched to patients within one tenant.
    issuers = ensure_demo_issuer(tmp_path / "issuer", fhir_servers=[], tenant="hospital-a")
    env = {
        **os.environ,
        "BENTOML_HOME": str(model_store),
        "TONLE_SERVING_CONFIG": str(tmp_path / "serving.yaml"),
        "TONLE_DATABASE_URL": database_url,
        "TONLE_ALLOWED_ISSUERS": str(issuers),
        "TONLE_PUBLIC_URL": url,
        "TONLE_LOG_LEVEL": "WARNING",
        "TONLE_SHUTDOWN_DRAIN_S": "0",  # no load balancer to wait for
        "TONLE_LINK_SECRET": secrets.token_hex(32),  # required outside dev mode
    }
    env.pop("TONLE_DEV", None)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "serving.service:Tonle",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=log,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, _tail(log)
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "not ready in 90 s\n" + _tail(log)
                time.sleep(0.3)
            body = dicom_bytes(patient_id="SERVE-1")
            dicom = {"content-type": "application/dicom"}
            refused = httpx.post(url + "/v1/imaging/cxr", content=body, headers=dicom)
            assert refused.status_code == 401
            answer = httpx.post(
                url + "/v1/imaging/cxr", content=body, headers={**dicom, "X-API-Key": secret}
            )
            assert answer.status_code == 200, answer.text
            result = answer.json()
            assert result["heatmap_url"].startswith(url)
            png = httpx.get(result["heatmap_url"])
            assert png.content.startswith(b"\x89PNG")
            rows = store.rows(request_id=answer.headers["x-request-id"])
            assert [r.outcome for r in rows] == ["advice"]
            assert rows[0].caller_tenant == "hospital-a"
            discovery_path = "/cds-services"
            token = sign_token(url + discovery_path, directory=tmp_path / "issuer")
            services = httpx.get(
                url + discovery_path, headers={"Authorization": f"Bearer {token}"}
            ).json()["services"]
            assert "cxr-triage" in [s["id"] for s in services]
            hook_path = "/cds-services/cxr-triage"
            token = sign_token(url + hook_path, directory=tmp_path / "issuer")
            hook = {
                "hook": "patient-view",
                "hookInstance": "0f6d7c3e-1111-4a5b-9c8d-123456789abc",
                "context": {"userId": "Practitioner/1", "patientId": "SERVE-1"},
            }
            cards = httpx.post(
                url + hook_path, json=hook, headers={"Authorization": f"Bearer {token}"}
            ).json()["cards"]
            assert len(cards) == 1
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            store.close()


def _tail(log: object) -> str:
    log.seek(0)  # type: ignore[attr-defined]
    return log.read().decode(errors="replace")[-3000:]  # type: ignore[attr-defined, no-any-return]
