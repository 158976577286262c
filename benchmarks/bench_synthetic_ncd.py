"""Benchmark: synthetic NCD cohort -> FHIR Bulk NDJSON -> point-in-time feature table.

Prints the wall and CPU time to simulate and write ``--n`` patients (``training.synthetic_ncd``),
the NDJSON size, and the time to build the C2 feature table from it
(``training.fhir_bulk.build_feature_table``), with rows/s for both.

Usage:
    .venv/bin/python benchmarks/bench_synthetic_ncd.py [--n 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from training.fhir_bulk import BuildReport, build_feature_table
from training.synthetic_ncd import INDEX_DATE, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "syn"
        start, cpu = time.perf_counter(), time.process_time()
        generate(out, n=args.n, seed=args.seed)
        gen_s, gen_cpu = time.perf_counter() - start, time.process_time() - cpu
        size_mb = sum(p.stat().st_size for p in out.glob("*.ndjson")) / 1e6
        lines = sum(1 for p in out.glob("*.ndjson") for _ in p.open(encoding="utf-8"))
        report = BuildReport()
        start, cpu = time.perf_counter(), time.process_time()
        table = build_feature_table(out, index_date=INDEX_DATE, report=report)
        build_s, build_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"patients                 {args.n:,}")
    print(f"NDJSON resources         {lines:,} ({size_mb:.0f} MB)")
    print(f"generate + write         {gen_s:.2f} s wall, {gen_cpu:.2f} s CPU")
    print(f"build feature table      {build_s:.2f} s wall, {build_cpu:.2f} s CPU")
    print(f"total                    {gen_s + build_s:.2f} s wall, {gen_cpu + build_cpu:.2f} s CPU")
    print("(wall > CPU means other processes shared the cores; single-threaded code)")
    print(
        f"table                    {table.shape[0]:,} rows x {table.shape[1]} columns, "
        f"{len(report.issues)} issues"
    )
    print(
        f"CVD events / at risk     {int(table['cvd_event'].sum()):,} / "
        f"{int(table['cvd_event'].notna().sum()):,}"
    )


if __name__ == "__main__":
    main()
