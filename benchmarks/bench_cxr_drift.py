"""What chest X-ray drift monitoring adds to one read, in CPU time.

Per read the analyser takes the image statistics of the model input
(:func:`models.cxr_drift.image_statistics`) and the calibrated scores, and the commit
counts each value's reference bin (:func:`serving.metrics.observe_read`: one counter
increment per statistic and label). Measured here on a real 224 px model input of a
synthetic 2048 x 2048 radiograph, with a reference as training records it, against the
same read's decode + quality gate + preprocessing (``CxrAnalyser.prepare`` without the
display copy), interleaved, median of the runs. ``--multiprocess`` counts into
prometheus_client's multiprocess files, as the server does under BentoML.

Usage:
    .venv/bin/python benchmarks/bench_cxr_drift.py [--rounds 2000] [--multiprocess]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--multiprocess", action="store_true")
    args = parser.parse_args()
    if args.multiprocess:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prom-")

    from models.cxr_drift import IMAGE_STATISTICS, image_statistics, score_values
    from models.cxr_preprocess import decode_dicom, to_model_input
    from models.cxr_quality import assess
    from serving.metrics import observe_read
    from tests.serving.imaging.cxr_fixtures import LABELS, dicom_bytes
    from training.cxr_synthetic import render_case
    from training.distribution import rows_to_matrix, training_distribution

    size = args.size
    pixels = (render_case(3, 0, (2048, 2048), findings=[]).image * 4000).astype(np.uint16)
    data = dicom_bytes(pixels)
    rng = np.random.default_rng(0)
    rows = []
    decoded = decode_dicom(data, target_size=size)
    x = np.asarray(to_model_input(decoded, size=size), dtype=np.float32)
    base = image_statistics(x, decoded)
    for _ in range(200):  # a reference with ten bins per value
        jitter = {k: v * rng.uniform(0.9, 1.1) for k, v in base.items()}
        rows.append(jitter | score_values(LABELS, rng.uniform(0, 1, len(LABELS)).tolist()))
    names = [*IMAGE_STATISTICS, *(f"score:{label}" for label in LABELS)]
    reference = training_distribution(rows_to_matrix(rows, names), names)
    probs = rng.uniform(0, 1, len(LABELS))

    def drift() -> None:
        values = image_statistics(x, decoded) | score_values(LABELS, probs.tolist())
        observe_read("imaging-cxr", reference, values)

    def prepare() -> None:
        d = decode_dicom(data, target_size=size)
        assess(d, min_side=size)
        to_model_input(d, size=size)

    values = image_statistics(x, decoded) | score_values(LABELS, probs.tolist())
    parts = {
        "image_statistics": lambda: image_statistics(x, decoded),
        "score_values": lambda: score_values(LABELS, probs.tolist()),
        f"observe_read ({len(values)} increments)": lambda: observe_read(
            "imaging-cxr", reference, values
        ),
    }
    timings: dict[str, list[float]] = {"drift (all)": [], "prepare": [], **{k: [] for k in parts}}
    prepare_every = max(1, args.rounds // 50)
    for i in range(args.rounds):
        t0 = time.perf_counter()
        drift()
        timings["drift (all)"].append(time.perf_counter() - t0)
        for name, call in parts.items():
            t0 = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - t0)
        if i % prepare_every == 0:
            t0 = time.perf_counter()
            prepare()
            timings["prepare"].append(time.perf_counter() - t0)
    mode = "multiprocess" if args.multiprocess else "single process"
    print(f"{size} px model input, {len(reference)} monitored values, counters: {mode}")
    for name, values in timings.items():
        print(f"  {name:32s} median {1000 * statistics.median(values):8.3f} ms")
    share = statistics.median(timings["drift (all)"]) / statistics.median(timings["prepare"])
    print(f"  drift / prepare: {100 * share:.1f} %")
    print(f"  load average: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
