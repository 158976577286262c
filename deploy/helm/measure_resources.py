"""Measure one Tonle pod's memory and CPU, for the chart's resource requests.

Starts a real ``bentoml serve serving.service:Tonle`` (one worker, as the chart runs
it) with the NCD fixture models and an untrained chest X-ray net of the demo's
architecture at 224 px (memory and CPU do not depend on weights), then:

1. idle: resident memory (PSS, arbiter + worker) after start-up;
2. NCD: 8 keep-alive clients, CDS Hooks ``patient-view`` calls, closed loop;
3. CXR: 4 clients posting a 512 x 512 DICOM, closed loop;

reporting for each the throughput, the server's CPU-ms per request (so requests per
second per core = 1000 / CPU-ms) and the peak memory seen (sampled every 0.2 s).
Clients run as a separate process (``benchmarks/loadgen.py``); on a shared machine the
per-request CPU figure is the robust one.

    .venv/bin/python deploy/helm/measure_resources.py [--duration 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_cxr_http import build_model, small_radiograph  # noqa: E402
from benchmarks.server import Server  # noqa: E402
from serving.config import ServingConfig  # noqa: E402
from tests.serving.cds_fixtures import build_store, cds_request, write_config  # noqa: E402
from tests.serving.imaging.cxr_fixtures import dicom_bytes  # noqa: E402

ARCH = "resnet-small-fine"  # configs/cxr.yaml model.arch


def _pss_mb(server: Server) -> float:
    root = psutil.Process(server.proc.pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


class _Peak:
    """The largest PSS of the server's processes while the block runs."""

    def __init__(self, server: Server) -> None:
        self.server, self.peak_mb, self._stop = server, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, _pss_mb(self.server))
            time.sleep(0.2)

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _load(
    server: Server, path: str, body: Path, header: str, clients: int, seconds: float
) -> dict[str, Any]:
    cpu = server.cpu_seconds()
    with _Peak(server) as peak:
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), "closed",
             server.url + path, str(body), "--connections", str(clients),
             "--duration", str(seconds), "--header", header],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    result = json.loads(done.stdout)
    answered = result["requests"] - result["errors"]
    cpu_ms = (server.cpu_seconds() - cpu) * 1000 / max(answered, 1)
    return {
        "clients": clients,
        "throughput_rps": round(result["throughput_rps"], 1),
        "errors": result["errors"],
        "p50_ms": round(result.get("p50_ms", float("nan")), 1),
        "server_cpu_ms_per_request": round(cpu_ms, 2),
        "requests_per_s_per_core": round(1000 / cpu_ms, 1),
        "peak_pss_mb": round(peak.peak_mb, 1),
    }


def main() -> None:
    """Print the measurements as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="Seconds per load.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        home = build_store(tmp)
        cxr, version = build_model(home, ARCH, tmp)
        config = write_config(
            tmp,
            models={"cvd-risk": "1.0.0", "diabetes-risk": "1.0.0", cxr: version},
            imaging={"model": cxr},
        )
        # A key the service no longer knows would leave the worker restarting, never ready.
        ServingConfig.model_validate(yaml.safe_load(config.read_text(encoding="utf-8")))
        (tmp / "cds.json").write_text(json.dumps(cds_request()))
        (tmp / "cxr.dcm").write_bytes(dicom_bytes(small_radiograph(512)))
        env = {
            "BENTOML_HOME": str(home),
            "TONLE_SERVING_CONFIG": str(config),
            "TONLE_DATABASE_URL": f"sqlite:///{tmp / 'audit.db'}",
            "TONLE_DEV": "1",
            "TONLE_LOG_LEVEL": "WARNING",
            "BENTOML_CONFIG_OPTIONS": "services.tonle.workers=1",
        }
        with Server("serving.service:Tonle", env, ROOT) as server:
            time.sleep(2)
            results: dict[str, Any] = {
                "cpus": psutil.cpu_count(),
                "idle_pss_mb": round(_pss_mb(server), 1),
                "ncd_cds": _load(server, "/cds-services/ncd-cvd-risk", tmp / "cds.json",
                                 "Content-Type:application/json", 8, args.duration),
                "cxr_512px_dicom": _load(server, "/v1/imaging/cxr", tmp / "cxr.dcm",
                                         "Content-Type:application/dicom", 4, args.duration),
            }  # fmt: skip
            results["after_load_pss_mb"] = round(_pss_mb(server), 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
