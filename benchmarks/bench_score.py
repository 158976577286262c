"""Benchmark: ``tonle score`` on a 1-million-row CSV: rows/s and peak memory.

Writes a CSV of ``--rows`` patients (documented columns, cholesterol in a mix of
mmol/L and mg/dL, ~2 % rows with a problem), then runs the real command
``tonle score MODEL CSV -o OUT`` in a child process and reports wall time, rows/s and
the child's peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``). With ``--model
NAME:VERSION`` a stored trained model is scored instead of the WHO lab model.

Usage:
    .venv/bin/python benchmarks/bench_score.py [--rows 1000000] [--chunksize 100000]
        [--model who-cvd-lab] [--country KHM]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A screening list: adults 35-80 with plausible values and a few bad ones."""
    rng = np.random.default_rng(seed)
    step = 250_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        mg = rng.random(n) < 0.3
        chol = rng.normal(4.6, 1.0, n).clip(2.5, 10)
        frame = pd.DataFrame(
            {
                "patient_id": [f"p{start + i:08d}" for i in range(n)],
                "sex": rng.choice(["female", "male"], n),
                "age": rng.integers(35, 81, n),
                "smoking": rng.integers(0, 2, n),
                "sbp": rng.normal(128, 18, n).round(0),
                "total_chol": np.where(mg, chol * 38.67, chol).round(2),
                "total_chol_unit": np.where(mg, "mg/dL", "mmol/L"),
                "diabetes": (rng.random(n) < 0.09).astype(int),
                "bmi": rng.normal(23, 4, n).round(1),
            }
        )
        bad = rng.random(n) < 0.01
        frame.loc[bad, "sbp"] = np.nan
        frame.to_csv(path, mode="a" if start else "w", header=start == 0, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunksize", type=int, default=100_000)
    parser.add_argument("--model", default="who-cvd-lab")
    parser.add_argument("--country", default="KHM")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "patients.csv", Path(tmp) / "risk.csv"
        start = time.perf_counter()
        write_csv(src, args.rows)
        print(
            f"wrote {args.rows:,} rows ({src.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - start:.1f} s"
        )
        cmd = [
            str(Path(sys.executable).parent / "tonle"),
            "score",
            args.model,
            str(src),
            "-o",
            str(out),
            "--chunksize",
            str(args.chunksize),
            "--skip-invalid",  # the list has a few impossible values, as real ones do
        ]
        if args.model.startswith("who-cvd-"):
            cmd += ["--country", args.country]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mb = usage.ru_maxrss / 1024
        cpu = usage.ru_utime + usage.ru_stime
        scored = pd.read_csv(out, usecols=["risk", "reason"])
    print(f"model                    {args.model}")
    print(
        f"rows                     {len(scored):,} ({int(scored['risk'].notna().sum()):,} scored, "
        f"{int(scored['reason'].notna().sum()):,} with a reason)"
    )
    print(f"wall time                {wall:.1f} s (incl. ~1 s start-up)")
    print(f"CPU time                 {cpu:.1f} s (wall > CPU: the cores were shared)")
    print(
        f"throughput               {len(scored) / wall:,.0f} rows/s wall, "
        f"{len(scored) / cpu:,.0f} rows/CPU-s"
    )
    print(f"peak RSS (tonle score)   {peak_mb:,.0f} MB  (chunksize {args.chunksize:,})")


if __name__ == "__main__":
    main()
