"""NCD benchmark: training time, accuracy against the WHO chart, ONNX scoring speed.

Prints, side by side in one run:

1. ``tonle train cvd-risk --synthetic N`` wall time (target < 5 min for N = 100,000 on
   2 cores), including synthetic FHIR NDJSON generation and the feature-table build.
2. On a held-out synthetic cohort (another seed, through the same FHIR path): the
   trained model's IPCW AUROC at 10 years divided by the AUROC of the WHO 2019 lab
   equation that generated the outcomes (target >= 0.99), with a bootstrap 95 % CI,
   and the model's calibration slope (target 0.9-1.1).
3. Scoring speed: ONNX Runtime vs scikit-learn, rows/s in batches of 10,000 (target
   >= 100,000 rows/s) and median one-row latency (target < 1 ms).

Usage: .venv/bin/python benchmarks/bench_ncd.py [--n 100000] [--holdout 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="training cohort size")
    parser.add_argument("--holdout", type=int, default=100_000, help="held-out cohort size")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (batches)")
    parser.add_argument(
        "--candidates",
        default="",
        help="comma-separated model kinds to train instead of the config's, e.g. 'hgb'",
    )
    args = parser.parse_args()

    import joblib

    from models import registry
    from models.ncd_predictor import NcdPredictor
    from training import ncd_metrics as m
    from training.ncd_evaluate import who_risk_for_table
    from training.ncd_table import feature_matrix, load_table
    from training.synthetic_ncd import INDEX_DATE, generate

    print(f"load average at start: {os.getloadavg()} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, BENTOML_HOME=str(Path(tmp) / "store"))
        os.environ["BENTOML_HOME"] = env["BENTOML_HOME"]
        est_path = Path(tmp) / "sklearn.joblib"
        config = ROOT / "configs" / "cvd-risk.yaml"
        if args.candidates:
            import yaml

            raw = yaml.safe_load(config.read_text(encoding="utf-8"))
            raw["candidates"] = args.candidates.split(",")
            config = Path(tmp) / "cvd-risk.yaml"
            config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        command = [
            str(Path(sys.executable).parent / "tonle"),
            "train",
            "cvd-risk",
            "--synthetic",
            str(args.n),
            "--seed",
            "1",
            "--version",
            "9.0.0",
            "--cards",
            str(Path(tmp) / "cards"),
            "--save-sklearn",
            str(est_path),
            "--config",
            str(config),
        ]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        train_s = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stdout, done.stderr)
            raise SystemExit(f"training failed with exit code {done.returncode}")
        print(f"\n== tonle train cvd-risk --synthetic {args.n}")
        print(done.stderr.strip())
        print(f"wall time: {train_s:.1f} s (target < 300 s)")

        stored = registry.verify("cvd-risk", "9.0.0")
        predictor = NcdPredictor(stored, threads=args.threads)
        estimator = joblib.load(est_path)

        folder = generate(Path(tmp) / "holdout", args.holdout, 777)
        table = load_table(folder, INDEX_DATE.isoformat())
        table = table[(table["age"] >= 40) & (table["age"] < 75)].reset_index(drop=True)
        x = feature_matrix(table, predictor.feature_names)
        p_model = predictor.predict_proba(x).astype(np.float64)
        p_who, _ = who_risk_for_table(table)
        ok = np.isfinite(p_who)
        time_ = table["cvd_time"].to_numpy(dtype=np.float64)[ok]
        event = (table["cvd_event"].to_numpy(dtype=np.float64) == 1.0)[ok]
        y, w = m.ipcw_labels(time_, event, 10.0)
        c = m.bootstrap_weights(int(ok.sum()), 200, 0)
        auc_model = m.auroc(y, p_model[ok], w, c)
        auc_who = m.auroc(y, p_who[ok], w, c)
        ratio = auc_model / auc_who
        slope, intercept = m.calibration_slope_intercept(y, p_model[ok], w, c[:, :1])
        lo, hi = np.percentile(ratio[1:], [2.5, 97.5])
        print(
            f"\n== held-out synthetic cohort: {int(ok.sum())} patients (seed 777), "
            f"{int((w > 0).sum())} with known 10-year status, {int(y.sum())} events"
        )
        print(f"AUROC model {auc_model[0]:.4f}, WHO equation {auc_who[0]:.4f}")
        print(f"AUROC ratio model/WHO: {ratio[0]:.4f} (95 % CI {lo:.4f}-{hi:.4f}; target >= 0.99)")
        print(f"calibration slope {slope[0]:.3f} (target 0.9-1.1), intercept {intercept[0]:.3f}")

        print(
            f"\n== scoring speed ({predictor.metadata.ncd.estimator} model, "
            f"{x.shape[1]} features, ONNX Runtime {args.threads} threads)"
        )
        batch = 10_000
        rows = x[: (len(x) // batch) * batch]

        def rate(fn: object) -> float:
            best = 0.0
            for _ in range(3):
                t0 = time.perf_counter()
                for i in range(0, len(rows), batch):
                    fn(rows[i : i + batch])  # type: ignore[operator]
                best = max(best, len(rows) / (time.perf_counter() - t0))
            return best

        onnx_rate = rate(predictor.predict_proba)
        sk_rate = rate(estimator.predict_proba)
        one = NcdPredictor(stored, threads=1)
        single = [x[i : i + 1] for i in range(2000)]
        for r in single[:50]:
            one.predict_proba(r)
        lat_onnx = []
        for r in single:
            t0 = time.perf_counter()
            one.predict_proba(r)
            lat_onnx.append((time.perf_counter() - t0) * 1000)
        lat_sk = []
        for r in single[:300]:
            t0 = time.perf_counter()
            estimator.predict_proba(r)
            lat_sk.append((time.perf_counter() - t0) * 1000)
        print(f"{'':24}{'ONNX Runtime':>16}{'scikit-learn':>16}{'ratio':>10}")
        print(
            f"{'rows/s, batches of 10k':24}{onnx_rate:>16,.0f}{sk_rate:>16,.0f}"
            f"{onnx_rate / sk_rate:>9.1f}x   (target >= 100,000)"
        )
        med_o, med_s = statistics.median(lat_onnx), statistics.median(lat_sk)
        print(
            f"{'one row, median ms':24}{med_o:>16.4f}{med_s:>16.4f}{med_s / med_o:>9.1f}x"
            f"   (target < 1 ms)"
        )
        parity = np.max(np.abs(predictor.predict_proba(x) - estimator.predict_proba(x)[:, 1]))
        print(f"parity on the {len(x)} held-out rows: max |p_onnx - p_sklearn| = {parity:.2e}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
