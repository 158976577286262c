"""Chest X-ray serving benchmark: end to end over HTTP, DICOM bytes in, JSON out.

Starts a real ``bentoml serve serving.service:Tonle`` on 127.0.0.1 with a chest X-ray
model (224 px) and measures, in one run:

1. one client, sequential: p50 / p90 latency for an uncompressed 2500 x 3000 16-bit
   radiograph (target p50 <= 60 ms) and for the same image as JPEG 2000 lossless
   (target p50 <= 250 ms), with the split reported by the service (decode, quality
   gate, preprocess, model, heatmap) and "response" = client time - service time
   (HTTP, body transfer, JSON, result storage, audit commit);
2. 8 concurrent clients (closed loop, ``benchmarks/loadgen.py``) with adaptive
   batching on and off, against the model-only ONNX Runtime batch throughput
   measured in this same run (target >= 80 %).

The model is the one given with ``--model name:version`` (from ``--store``), else an
untrained ``CxrNet`` of ``--arch`` exported to ONNX: speed does not depend on weights.

Usage:
    .venv/bin/python benchmarks/bench_cxr_http.py
    .venv/bin/python benchmarks/bench_cxr_http.py --model cxr-triage:0.1.0-demo
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server import Server  # noqa: E402
from tests.serving.imaging.cxr_fixtures import dicom_bytes  # noqa: E402

PY = sys.executable
LOADGEN = str(ROOT / "benchmarks" / "loadgen.py")
LABELS = ["abnormal", "tb", "nodule", "consolidation", "effusion"]
STAGES = ["decode_ms", "quality_ms", "preprocess_ms", "model_ms", "heatmap_ms", "store_ms"]


def build_model(home: Path, arch: str, tmp: Path) -> tuple[str, str]:
    """An untrained CxrNet of ``arch`` at 224 px in the store at ``home``."""
    os.environ["BENTOML_HOME"] = str(home)
    import torch

    from models import registry
    from models.cxr_export import export_onnx
    from models.cxr_net import CxrNet
    from models.metadata import ImageSpec, ModelMetadata, OperatingPoint, OutputSpec

    torch.manual_seed(0)
    path = export_onnx(CxrNet(arch=arch), tmp / "bench.onnx", 224)  # type: ignore[arg-type]
    meta = ModelMetadata(
        name="cxr-triage",
        version="0.0.1-bench",
        task="cxr-triage",
        description=f"untrained {arch} for speed measurements only",
        image=ImageSpec(size=224),
        inputs={"image": ["N", 1, 224, 224]},
        outputs=[
            OutputSpec(name="logits", meaning="logits", labels=LABELS),
            OutputSpec(name="cam", meaning="class activation maps", labels=LABELS),
        ],
        operating_points=[
            OperatingPoint(label=label, threshold=0.5, chosen_on="benchmark placeholder")
            for label in LABELS
        ],
        extra={"labels": LABELS, "arch": arch},
    )
    registry.save(path, meta)
    return "cxr-triage", "0.0.1-bench"


def radiograph() -> np.ndarray:
    """A 3000 x 2500 (rows x columns) 16-bit synthetic chest radiograph with fine noise."""
    from training.cxr_synthetic import render_case

    small = render_case(11, 0, (600, 500), findings=["nodule"]).image
    big = np.kron(small, np.ones((5, 5), np.float32))
    rng = np.random.default_rng(0)
    big = np.clip(big + rng.normal(0, 0.004, big.shape).astype(np.float32), 0, 1)
    return (big * 65535).astype(np.uint16)


def jpeg2000(data: bytes, pixels: np.ndarray) -> bytes:
    """The same DICOM, JPEG 2000 lossless (pylibjpeg-openjpeg encoder)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg")
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def one_client(url: str, body: bytes, n: int) -> dict[str, Any]:
    """Sequential requests; p50 of client latency and of each service stage."""
    headers = {"content-type": "application/dicom"}
    totals: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in [*STAGES, "total_ms", "response_ms"]}
    with httpx.Client(timeout=60) as client:
        for i in range(n + 5):
            start = time.perf_counter()
            response = client.post(url, content=body, headers=headers)
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
            if i < 5:  # warm-up
                continue
            timings = response.json()["timings"]
            totals.append(elapsed)
            for stage in STAGES:
                stages[stage].append(timings[stage])
            service_ms = timings["total_ms"] + timings["store_ms"]
            stages["total_ms"].append(service_ms)
            stages["response_ms"].append(elapsed - service_ms)
    totals.sort()
    return {
        "n": n,
        "p50_ms": statistics.median(totals),
        "p90_ms": totals[int(0.9 * (len(totals) - 1))],
        "split_p50_ms": {k: statistics.median(v) for k, v in stages.items()},
    }


def upload_floor(url: str, body: bytes, n: int) -> float:
    """p50 ms of the same upload answered 415 at once (body read + audit row + JSON)."""
    times: list[float] = []
    with httpx.Client(timeout=60) as client:
        for i in range(n + 3):
            start = time.perf_counter()
            response = client.post(url, content=body, headers={"content-type": "image/x-none"})
            if response.status_code != 415:
                raise RuntimeError(f"expected 415, got {response.status_code}")
            if i >= 3:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def closed_loop(url: str, body_file: Path, connections: int, duration: float) -> dict[str, Any]:
    command = [PY, LOADGEN, "closed", url, str(body_file), "--duration", str(duration),
               "--connections", str(connections), "--header",
               "content-type:application/dicom"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def model_only_throughput(onnx_path: Path, batch: int, seconds: float) -> float:
    """Images/s of the bare ONNX Runtime session (2 threads) on batches of ``batch``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).random((batch, 1, 224, 224), dtype=np.float32)
    for _ in range(3):
        session.run(None, {"image": images})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"image": images})
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="name:version in --store")
    parser.add_argument("--store", type=Path, default=ROOT / ".tonle" / "models")
    parser.add_argument("--arch", default="resnet-small", help="untrained arch if no --model")
    parser.add_argument("-n", type=int, default=30, help="sequential requests per image")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2, help="also run with N workers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        home = tmp / "store"
        if args.model:
            name, version = args.model.split(":")
            source = args.store / "models" / name / version
            shutil.copytree(source, home / "models" / name / version)
        else:
            name, version = build_model(home, args.arch, tmp)
        onnx_path = home / "models" / name / version / "model.onnx"
        pixels = radiograph()
        raw = dicom_bytes(pixels)
        j2k = jpeg2000(raw, pixels)
        (tmp / "raw.dcm").write_bytes(raw)
        results: dict[str, Any] = {
            "model": f"{name}:{version}",
            "cpus": os.cpu_count(),
            "image": "3000 x 2500, 16-bit",
            "bytes": {"uncompressed": len(raw), "jpeg2000": len(j2k)},
        }
        runs = [("batching", True, 1), ("no-batching", False, 1)]
        if args.workers > 1:
            runs.append((f"batching {args.workers} workers", True, args.workers))
        for key, batching, workers in runs:
            imaging: dict[str, Any] = {
                "model": name,
                "results_dir": str(tmp / f"imaging-{len(results)}"),
                "adaptive_batching": batching,
                "max_batch_size": args.connections,
            }
            if workers > 1:
                imaging["model_threads"] = 1  # one core per worker, no oversubscription
            config = {"models": {name: version}, "imaging": imaging}
            (tmp / "serving.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
            env = {
                "BENTOML_HOME": str(home),
                "TONLE_SERVING_CONFIG": str(tmp / "serving.yaml"),
                "TONLE_DATABASE_URL": f"sqlite:///{tmp / f'audit-{len(results)}.db'}",
                "TONLE_DEV": "1",
                "TONLE_LOG_LEVEL": "WARNING",
                "BENTOML_CONFIG_OPTIONS": f"services.tonle.workers={workers}",
            }
            with Server("serving.service:Tonle", env, ROOT) as server:
                url = f"{server.url}/v1/imaging/cxr"
                results[f"{key} upload floor ms"] = upload_floor(url, raw, args.n)
                results[f"{key} one client uncompressed"] = one_client(url, raw, args.n)
                results[f"{key} one client jpeg2000"] = one_client(url, j2k, args.n)
                results[f"{key} {args.connections} clients"] = closed_loop(
                    url, tmp / "raw.dcm", args.connections, args.duration
                )
        results["model-only ORT img/s"] = model_only_throughput(onnx_path, args.connections, 10)

    print(f"\nChest X-ray over HTTP: {results['model']}, {results['cpus']} CPUs, 224 px, "
          f"{results['image']} ({results['bytes']['uncompressed'] / 1e6:.1f} MB raw, "
          f"{results['bytes']['jpeg2000'] / 1e6:.1f} MB JPEG 2000)")  # fmt: skip
    print(f"{'one client':<34}{'p50':>8}{'p90':>8} | " + "".join(
        f"{s.removesuffix('_ms'):>11}" for s in [*STAGES, "response_ms"]))  # fmt: skip
    keys = [k.removesuffix(" upload floor ms") for k in results if k.endswith("upload floor ms")]
    for key in keys:
        for image in ("uncompressed", "jpeg2000"):
            r = results[f"{key} one client {image}"]
            split = r["split_p50_ms"]
            print(f"{key + ' ' + image:<34}{r['p50_ms']:>8.1f}{r['p90_ms']:>8.1f} | "
                  + "".join(f"{split[s]:>11.1f}" for s in [*STAGES, "response_ms"]))  # fmt: skip
    for key in keys:
        print(f"{key}: same 15 MB upload answered 415 at once (HTTP + body + audit row): "
              f"p50 {results[key + ' upload floor ms']:.1f} ms")  # fmt: skip
    ort_rate = results["model-only ORT img/s"]
    print(f"\nmodel-only ONNX Runtime, batch {args.connections}: {ort_rate:.1f} img/s")
    for key in keys:
        r = results[f"{key} {args.connections} clients"]
        print(f"{key}, {args.connections} clients: {r['throughput_rps']:.1f} img/s "
              f"({r['ok_2xx']} ok, {r['errors']} errors, p50 {r['p50_ms']:.0f} ms, "
              f"p99 {r['p99_ms']:.0f} ms) = {r['throughput_rps'] / ort_rate * 100:.0f} % "
              "of model-only")  # fmt: skip
    print("\nJSON:", json.dumps(results))


if __name__ == "__main__":
    main()
