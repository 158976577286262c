"""Chest X-ray model benchmark: accuracy, localisation and speed of the model call.

Prints, in one run:

1. held-out synthetic AUROC for "abnormal" (target >= 0.95) and the rate at which the
   activation map's peak falls inside the finding mask (target >= 0.80), for a stored
   artifact, on a FRESH synthetic set (a seed the training set never used);
2. model-call latency, batch 1, 224 px: PyTorch eager vs ONNX Runtime, same run,
   same architecture (target: ORT >= 2x faster);
3. model-only ONNX Runtime batch throughput (images/s).

Usage:
    .venv/bin/python benchmarks/bench_cxr_model.py --model cxr-triage:0.4.0-demo
    .venv/bin/python benchmarks/bench_cxr_model.py --arch-sweep   # speed of each arch
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from models.cxr_export import export_onnx
from models.cxr_net import ARCHITECTURES, CxrNet


def _median_ms(fn: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def speed(arch: str, size: int, repeat: int, threads: int, images: np.ndarray) -> dict[str, float]:
    """Eager vs ORT latency (batch 1) and ORT batch-8 throughput for ``arch``."""
    torch.set_num_threads(threads)
    net = CxrNet(arch).eval()  # type: ignore[arg-type]
    one = np.ascontiguousarray(images[:1])
    batch = np.ascontiguousarray(np.repeat(images[:1], 8, axis=0))
    x = torch.from_numpy(one)
    with torch.no_grad():
        eager = _median_ms(lambda: net(x), repeat)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(net, Path(tmp) / "m.onnx", size)
        sess = _session(path, threads)
        onnx_ms = _median_ms(lambda: sess.run(None, {"image": one}), repeat)
        batch_ms = _median_ms(lambda: sess.run(None, {"image": batch}), max(3, repeat // 4))
        sess1 = _session(path, 1)
        onnx1_ms = _median_ms(lambda: sess1.run(None, {"image": one}), repeat)
    return {
        "eager_ms": eager,
        "ort_ms": onnx_ms,
        "ort_1thread_ms": onnx1_ms,
        "speedup": eager / onnx_ms,
        "ort_batch8_img_per_s": 8000.0 / batch_ms,
    }


def accuracy(tag: str, n: int, seed: int, size: int, int8: bool, repeat: int) -> None:
    """Held-out synthetic AUROC and map-peak-in-mask rate of a stored artifact."""
    from models import registry
    from training.cxr_data import load_cxr_data
    from training.cxr_evaluate import evaluate_stored
    from training.cxr_synthetic import generate

    name, _, version = tag.partition(":")
    stored = registry.verify(name, version or "latest")
    assert stored.metadata.image is not None
    with tempfile.TemporaryDirectory() as tmp:
        labels = generate(Path(tmp) / "heldout", n, seed, size=size)
        data = load_cxr_data(labels, stored.metadata.image.size)
        report = evaluate_stored(stored, data, reps=500)
        if int8:
            _int8(stored, data, report.label("abnormal").auroc.value, Path(tmp), seed, repeat)
    abnormal = report.label("abnormal")
    auroc = abnormal.auroc
    print(f"model {stored.metadata.tag} on {n} fresh synthetic images (seed {seed}, {size} px)")
    print(
        f"  AUROC abnormal: {auroc.value:.3f} (95% CI {auroc.ci_low:.3f}-{auroc.ci_high:.3f}), "
        f"target >= 0.95"
    )
    for r in report.labels[1:]:
        value = "-" if r.auroc.value is None else f"{r.auroc.value:.3f}"
        print(f"  AUROC {r.label}: {value} (positives {r.auroc.n_positive})")
    if abnormal.threshold is not None:
        print(
            f"  at threshold {abnormal.threshold:.3f}: sensitivity {abnormal.sensitivity:.3f}, "
            f"specificity {abnormal.specificity:.3f}"
        )
    else:
        print(f"  no operating point: {abnormal.no_operating_point}")
    loc = report.headline_localisation()
    print(
        f"  map peak inside finding mask: {loc.peak_in_mask:.3f} of {loc.n} positives "
        f"(target >= 0.80); mean IoU {loc.mean_iou:.3f} "
        "(per finding, baselines, calibration: benchmarks/bench_cxr_localisation.py)"
    )


def _int8(stored: object, data: object, fp32_auroc: float | None, tmp: Path, seed: int,
          repeat: int) -> None:  # fmt: skip
    """Static QDQ int8 variant: AUROC drop and latency vs fp32; kept only if both pass."""
    import shutil

    from models.cxr_export import quantize_int8
    from models.registry import StoredModel
    from training.cxr_data import load_cxr_data
    from training.cxr_evaluate import evaluate_stored
    from training.cxr_synthetic import generate

    assert isinstance(stored, StoredModel)
    assert stored.metadata.image is not None
    calib = load_cxr_data(
        generate(tmp / "calib", 64, seed + 1, size=256), stored.metadata.image.size
    )
    folder = tmp / "int8"
    folder.mkdir()
    quantize_int8(stored.onnx_path, folder / "model.onnx", calib.images)
    shutil.copy(stored.path / "metadata.json", folder / "metadata.json")
    q = StoredModel(metadata=stored.metadata, path=folder)
    report = evaluate_stored(q, data, reps=0)  # type: ignore[arg-type]
    q_auroc = report.label("abnormal").auroc.value
    one = np.ascontiguousarray(calib.images[:1])
    fp = _session(stored.onnx_path, 2)
    i8 = _session(folder / "model.onnx", 2)
    fp_ms = _median_ms(lambda: fp.run(None, {"image": one}), repeat)
    i8_ms = _median_ms(lambda: i8.run(None, {"image": one}), repeat)
    drop = (fp32_auroc or 0.0) - (q_auroc or 0.0)
    keep = drop < 0.005 and i8_ms < fp_ms
    print(
        f"  int8 (static QDQ, per-channel, 64 real calibration images): AUROC abnormal "
        f"{q_auroc:.4f} (drop {drop:+.4f}), latency {i8_ms:.1f} ms vs fp32 {fp_ms:.1f} ms "
        f"-> {'KEEP' if keep else 'DISCARD'} (rule: drop < 0.005 and faster)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cxr-triage:0.4.0-demo", help="NAME:VERSION")
    parser.add_argument("--n", type=int, default=300, help="held-out images")
    parser.add_argument("--seed", type=int, default=20261125, help="held-out set seed")
    parser.add_argument("--data-size", type=int, default=256, help="held-out image side")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arch-sweep", action="store_true", help="speed of every arch")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--int8", action="store_true", help="measure a static int8 variant")
    args = parser.parse_args()

    if not args.skip_accuracy and not args.arch_sweep:
        accuracy(args.model, args.n, args.seed, args.data_size, args.int8, args.repeat)

    size = 224
    rng = np.random.default_rng(0)
    images = rng.random((1, 1, size, size), dtype=np.float32)
    archs = ARCHITECTURES
    if not args.arch_sweep:  # the architecture of --model (it was resnet-small whatever
        from models import registry  # the model with --skip-accuracy)

        name, _, version = args.model.partition(":")
        archs = (str(registry.get(name, version or "latest").metadata.cxr.arch),)
    print(f"model call, {size} px, {args.threads} threads, median of {args.repeat}:")
    for arch in archs:
        r = speed(arch, size, args.repeat, args.threads, images)
        print(
            f"  {arch:13s} eager {r['eager_ms']:7.1f} ms | ORT {r['ort_ms']:6.1f} ms "
            f"(1 thread {r['ort_1thread_ms']:6.1f}) | ORT/eager speedup {r['speedup']:4.1f}x "
            f"(target >= 2x) | ORT batch-8 throughput {r['ort_batch8_img_per_s']:6.1f} img/s"
        )


if __name__ == "__main__":
    main()
