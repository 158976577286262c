"""``tonle calibrate cxr`` on a synthetic study of N people (target: 10,000 in < 10 s).

Writes a study CSV like a WHO/TDR calibration study (everyone scored; everyone above
0.4 and one in ten below it tested; age, sex, HIV, symptoms and per-person test costs),
then times the whole command as a user runs it, in a fresh process (interpreter start,
imports, reading and checking, 101 thresholds overall and for every stratum, plots,
HTML report) with ``--sampling-fraction``, ``--cost-per-test`` and no rule, and prints
the in-process split for the table computation alone.

Usage: .venv/bin/python benchmarks/bench_calibrate.py [--n 10000] [--repeats 3]
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


def write_study(path: Path, n: int, seed: int = 0) -> None:
    """A synthetic study: TB prevalence ~5 %, cases score higher."""
    rng = np.random.default_rng(seed)
    tb = rng.uniform(size=n) < 0.05
    score = np.clip(rng.beta(2, 8, n) + tb * rng.uniform(0.2, 0.7, n), 0, 1)
    tested = (score >= 0.4) | (rng.uniform(size=n) < 0.1)
    age = rng.integers(15, 90, n)
    sex = rng.choice(["F", "M"], n)
    hiv = rng.choice(["1", "0", ""], n, p=[0.1, 0.8, 0.1])
    symptoms = rng.choice(["1", "0"], n)
    cost = np.round(rng.uniform(10, 20, n), 2)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("person_id,score,reference,age,sex,hiv,symptoms,test_cost\n")
        for i in range(n):
            ref = str(int(tb[i])) if tested[i] else ""
            handle.write(
                f"P{i:06d},{score[i]:.4f},{ref},{age[i]},{sex[i]},{hiv[i]},{symptoms[i]},"
                f"{cost[i]}\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="people in the study")
    parser.add_argument("--repeats", type=int, default=3, help="timed command runs")
    args = parser.parse_args()

    from training.calibrate.cxr import calibrate, default_thresholds, parse_sampling_fractions
    from training.calibrate.study import read_study

    with tempfile.TemporaryDirectory() as tmp:
        study_path = Path(tmp) / "study.csv"
        write_study(study_path, args.n)
        bands = parse_sampling_fractions("0:0.1,0.4:1")
        t0 = time.perf_counter()
        study = read_study(study_path)
        t1 = time.perf_counter()
        calibrate(study, default_thresholds(), cost_per_test=15.0, bands=bands)
        t2 = time.perf_counter()
        print(f"in process: read+check {t1 - t0:.3f} s, tables (overall + strata) {t2 - t1:.3f} s")
        command = [
            sys.executable, "-c", "from cli.app import main; main()",
            "calibrate", "cxr", str(study_path), "-o", str(Path(tmp) / "out"),
            "--cost-per-test", "15", "--sampling-fraction", "0:0.1,0.4:1",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        walls = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            subprocess.run(command, check=True, env=env, capture_output=True)
            walls.append(time.perf_counter() - started)
        print(
            f"tonle calibrate cxr, {args.n} people, 101 thresholds: median "
            f"{statistics.median(walls):.2f} s (runs: {', '.join(f'{w:.2f}' for w in walls)}; "
            "target < 10 s)"
        )


if __name__ == "__main__":
    main()
