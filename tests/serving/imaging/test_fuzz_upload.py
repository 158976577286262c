"""Mutated DICOM / PNG / JPEG / JPEG 2000 files through ``POST /v1/imaging/cxr``: every
answer is a 2xx or a 4xx with a reason, never a 5xx, and no single input raises the
worker's peak memory by 300 MB or more (measured per request, see ``tests.peak_memory``).

The corpus (``training.cxr_bad_inputs.mutated_corpus``) is generated here, seeded and
bounded: 12 seed files (synthetic chest radiographs in every codec, and pydicom's own
JPEG 2000, JPEG, RLE and native test files), 12 mutants each: declared sizes (PNG IHDR,
JPEG 2000 SIZ, JPEG SOF, DICOM Rows / Columns), truncation, bit flips, random header
bytes, cut or repeated slices. Run with ``-s`` to see the worst growth.

The slow test sends the same corpus, and the decompression bombs, to a real
``bentoml serve`` (production mode, API key) and measures its worker's peak per request.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from starlette.applications import Starlette

from serving.audit import AuditStore
from serving.imaging.config import ImagingConfig
from serving.imaging.routes import routes
from serving.imaging.state import ImagingState
from tests.peak_memory import reset_peak, resident_mb
from tests.serving.imaging.conftest import Client, LockableAudit, fake_runtime
from tests.serving.imaging.cxr_fixtures import make_cxr_artifact
from tests.serving.service_process import TonleProcess

cases = pytest.importorskip("training.cxr_bad_inputs")

MAX_GROWTH_MB = 300


def test_mutated_uploads_never_give_a_5xx_or_a_memory_bomb(
    model_store: Path, tmp_path: Path
) -> None:
    stored = make_cxr_artifact(tmp_path, size=224)
    audit = LockableAudit.at(tmp_path)
    state = ImagingState.build(
        stored,
        ImagingConfig(),
        site="default",
        public_url="http://t",
        audit=audit,
    )
    app = Starlette(routes=routes())
    app.state.runtime = fake_runtime(state)
    client = Client(app)
    corpus = cases.mutated_corpus(seed=0, per_seed=12)
    wrong: list[str] = []
    worst = (0.0, "")
    statuses: dict[int, int] = {}
    try:
        for case in corpus:
            media = "application/dicom" if case.media == "dicom" else "image/png"
            start = reset_peak()
            response = client.post(
                "/v1/imaging/cxr", content=case.data, headers={"content-type": media}
            )
            growth = resident_mb()[1] - start
            worst = max(worst, (growth, case.name))
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if growth >= MAX_GROWTH_MB:
                wrong.append(f"{case.name}: peak memory grew by {growth:.0f} MB")
            if response.status_code >= 500:
                wrong.append(f"{case.name}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400 and not response.json().get("reason"):
                wrong.append(f"{case.name}: {response.status_code} without a reason")
        print(f"\n{len(corpus)} mutants, statuses {sorted(statuses.items())}, "
              f"worst growth {worst[0]:.0f} MB ({worst[1]})")  # fmt: skip
        assert not wrong, "\n".join(wrong)
        assert len(audit.rows()) == len(corpus)  # every answer audited
        valid = cases.fuzz_seeds()["native DICOM"][0]
        after = client.post(
            "/v1/imaging/cxr", content=valid, headers={"content-type": "application/dicom"}
        )
        assert after.status_code == 200, after.text  # the worker still answers
    finally:
        client.close()
        audit.close()


@pytest.mark.slow
def test_real_service_worker_memory_per_mutated_upload(model_store: Path, tmp_path: Path) -> None:
    stored = make_cxr_artifact(tmp_path, size=224)
    config = {
        "models": {"cxr-triage": stored.metadata.version},
        "imaging": {"model": "cxr-triage"},
    }
    (tmp_path / "imaging.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    database_url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = AuditStore.open(database_url)
    _, secret = store.create_api_key("hospital-a", "fuzz")
    store.close()
    env = {"BENTOML_HOME": str(model_store), "TONLE_SERVING_CONFIG": str(tmp_path / "imaging.yaml")}
    corpus = cases.bomb_cases() + cases.mutated_corpus(seed=1, per_seed=6)
    wrong: list[str] = []
    worst = (0.0, "")
    with TonleProcess(tmp_path, database_url, env=env) as service:
        worker = service.worker().pid
        with httpx.Client(base_url=service.url, headers={"X-API-Key": secret}) as client:
            for case in corpus:
                media = "application/dicom" if case.media == "dicom" else "image/png"
                start = reset_peak(worker)
                try:
                    response = client.post(
                        "/v1/imaging/cxr", content=case.data, headers={"content-type": media},
                        timeout=60,
                    )  # fmt: skip
                except httpx.TimeoutException:
                    wrong.append(f"{case.name}: no answer in 60 s")
                    continue
                finally:
                    growth = resident_mb(worker)[1] - start
                    worst = max(worst, (growth, case.name))
                    if growth >= MAX_GROWTH_MB:
                        wrong.append(f"{case.name}: worker peak grew by {growth:.0f} MB")
                if response.status_code >= 500:
                    wrong.append(f"{case.name}: {response.status_code} {response.text[:200]}")
        assert service.worker().pid == worker, "the worker was replaced (crashed?)"
    print(f"\n{len(corpus)} uploads to bentoml serve, worst worker growth "
          f"{worst[0]:.0f} MB ({worst[1]})")  # fmt: skip
    assert not wrong, "\n".join(wrong)
