"""Studies are analysed when they arrive: Orthanc's OnStableStudy calls Tonle over HTTP,
Tonle retrieves, analyses and writes back once (no loop on its own write-back)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette

from serving.imaging.config import DicomWebConfig
from serving.imaging.dicom_out import COMPREHENSIVE_SR
from serving.imaging.dicomweb import DicomWebClient
from serving.imaging.routes import routes
from serving.imaging.studies import orthanc_on_stable_study_lua
from tests.serving.imaging.conftest import AppFactory, LockableAudit, fake_runtime
from tests.serving.imaging.cxr_fixtures import dicom_bytes
from tests.serving.imaging.orthanc import running_orthanc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Served:
    """The imaging routes on a real HTTP server in a thread (Orthanc must reach them)."""

    def __init__(self, app: Starlette) -> None:
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.mark.slow
def test_stable_study_is_analysed_once_on_arrival(
    make_app: AppFactory, tmp_path: Path, audit: LockableAudit
) -> None:
    # Orthanc first (its URL goes in Tonle's config), then Tonle, then the Lua hook.
    orthanc_dir = tmp_path / "orthanc"
    orthanc_dir.mkdir()
    tonle_port = _free_port()
    lua = orthanc_dir / "tonle.lua"
    lua.write_text(orthanc_on_stable_study_lua(f"http://127.0.0.1:{tonle_port}"), "utf-8")
    with running_orthanc(orthanc_dir, LuaScripts=[str(lua)], StableAge=1) as pacs_url:
        _, state = make_app(pacs=DicomWebConfig(base_url=pacs_url))
        app = Starlette(routes=routes())
        app.state.runtime = fake_runtime(state)
        served = _Served(app)
        served.port = tonle_port
        served.server.config.port = tonle_port
        with served:
            pacs = DicomWebClient(DicomWebConfig(base_url=pacs_url))
            study = "1.2.826.0.1.77"
            pacs.store(study, [dicom_bytes(study_uid=study, patient_id="ARRIVAL-1")])
            deadline = time.monotonic() + 20
            reports: list[str] = []
            while time.monotonic() < deadline and not reports:
                time.sleep(0.5)
                reports = [i.sop for i in pacs.search_instances(study) if i.modality == "SR"]
            assert reports, "no SR written back after the study became stable"
            # Our own write-back makes the study stable again: it must not loop.
            time.sleep(3.5)
            instances = pacs.search_instances(study)
            assert sorted(i.modality or "" for i in instances) == ["CR", "OT", "SR"]
            sr = pacs.retrieve_instance(next(i for i in instances if i.modality == "SR"))
            assert COMPREHENSIVE_SR.encode() in sr[:1024]
            pacs.close()
    # Analysed once; the study's later stable events (our write-back) only show it again.
    rows = audit.rows()
    outcomes = [r.outcome for r in rows if r.service_id == "imaging-study-instance"]
    assert outcomes[0] == "advice"
    assert set(outcomes[1:]) <= {"read"}
    # Each call from the PACS was answered 202 at once, after a row of its own.
    calls = [(r.outcome, r.reason) for r in rows if r.service_id == "imaging-study"]
    assert set(calls) == {("no-advice", "accepted")}
    latest = state.store.for_patient("ARRIVAL-1", tenant=None)
    assert len(latest) == 1
