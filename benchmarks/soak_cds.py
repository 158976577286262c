"""Benchmark: a steady-load soak of the NCD CDS Hooks call for minutes (docs/reliability.md).

docs/reliability.md asks for steady load "for minutes" with 0 errors, p99 within the target,
memory drift < 10 % and audit rows == 2xx responses; the test suite's steady-load
scenario runs only seconds. This script builds the fixture models in a temporary store,
starts ``bentoml serve`` for Tonle (SQLite audit store unless ``--database-url``; dev
mode, no JWTs) and drives the CDS call open-loop at ``--rate`` req/s with
``benchmarks/loadgen.py``, one run per ``--sample-s`` window, back to back (between
windows the generator restarts, a pause of ~0.2 s). After each window, when no call is
in flight, it samples:

- RSS and open file descriptors of every service process (arbiter and workers);
- p50 / p99 latency (from each call's scheduled send time) and errors of the window;
- audit rows committed vs 2xx answered so far (they must be equal at every sample),
  and duplicate request ids;
- the join on request id (docs/reliability.md promise 1): the generator records the
  ``X-Request-Id`` of every 2xx answer (``loadgen.py --record-ids``), and each of the
  window's ids must have exactly one audit row; ids with none (``miss``, a 2xx answer
  without an id counts here too) or with more than one, or answered twice (``2x``), are
  reported. At the end every id of the run is joined once more;
- the server's CPU time, how often its threads were preempted (involuntary context
  switches: other work on the machine), the machine's load average, and how late the
  generator itself started its calls (``lag99``, p99 ms; a busy machine delays the
  client too, and open-loop latency counts that).

At the end it prints the join over the whole run, the drift (service RSS, first vs last
minute, as the mean of the samples in each; p99 of all calls in the first vs the last
minute) and PASS/FAIL against docs/reliability.md's steady-load criteria; the exit status is
0 only on PASS.

Usage:
    .venv/bin/python benchmarks/soak_cds.py [--minutes 5] [--rate 100] [--sample-s 10]
        [--p99-target-ms 50] [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_cds import CDS_PATH, LOADGEN, PY, warm  # noqa: E402
from benchmarks.server import Server  # noqa: E402
from serving.audit import schema  # noqa: E402
from serving.audit.records import OPERATOR_SERVICES  # noqa: E402
from tests.serving.cds_fixtures import build_store, cds_request, write_config  # noqa: E402

# docs/reliability.md, steady load: memory drift under 10 %; the latency target is a
# p99 of 50 ms at 100 calls/s.
MAX_RSS_DRIFT = 0.10
MiB = 1 << 20
# A window whose calls the generator itself started this late (p99) ran on a machine
# busy with other work; reported apart, never used to pass.
ON_TIME_LAG_MS = 5.0


@dataclass
class Join:
    """2xx answers joined with the audit rows on request id; every field 0/empty on PASS."""

    ids: int  # distinct request ids joined
    missing: list[str]  # answered 2xx, no audit row
    duplicated: list[str]  # more than one audit row, or answered more than once
    without_id: int = 0  # 2xx answers with no X-Request-Id: no row can be shown for them

    @property
    def ok(self) -> bool:
        return not self.missing and not self.duplicated and not self.without_id

    def describe(self, limit: int = 5) -> str:
        """One line: the counts, and the first few ids of each kind."""
        text = (
            f"{self.ids} request ids of 2xx answers: {len(self.missing)} without an audit "
            f"row, {len(self.duplicated)} duplicated, {self.without_id} 2xx answers without "
            "an X-Request-Id"
        )
        for name, ids in (("missing", self.missing), ("duplicated", self.duplicated)):
            if ids:
                more = f" (+{len(ids) - limit})" if len(ids) > limit else ""
                text += f"; {name}: {', '.join(ids[:limit])}{more}"
        return text


@dataclass
class Sample:
    """One window's load result and the service's state right after it."""

    t_s: float
    load: dict[str, Any]
    latencies_ms: list[float]
    rss: dict[int, int]  # pid -> bytes
    fds: dict[int, int]  # pid -> open descriptors
    preempted: int  # involuntary context switches of the service's threads in the window
    audit_rows: int
    duplicates: int
    ok_so_far: int
    cpu_s: float
    load1: float
    join: Join  # this window's 2xx answers
    names: dict[int, str] = field(default_factory=dict)


def _role(process: psutil.Process, server: Server) -> str:
    if process.pid == server.proc.pid:
        return "arbiter"
    if "_bentoml_impl.worker" in " ".join(process.cmdline()):
        return "worker"
    return str(process.name())


def audit_counts(database_url: str) -> tuple[int, int]:
    """Audit rows of calls, and how many of them repeat a request id. The operators'
    reads (a scrape of ``/metrics``, ``/ui/monitor``) are audited too: not counted."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            table = schema.audit_events
            rows, distinct = connection.execute(
                select(func.count(), func.count(table.c.request_id.distinct())).where(
                    table.c.service_id.not_in(OPERATOR_SERVICES)
                )
            ).one()
    finally:
        engine.dispose()
    return int(rows), int(rows) - int(distinct)


def audit_join(database_url: str, answered: Counter[str], without_id: int = 0) -> Join:
    """Join request ids of 2xx answers (id -> times answered) with the audit rows."""
    wanted = list(answered)
    rows: dict[str, int] = {}
    table = schema.audit_events
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            for start in range(0, len(wanted), 500):  # well under any driver's bind limit
                chunk = wanted[start : start + 500]
                query = (
                    select(table.c.request_id, func.count())
                    .where(table.c.request_id.in_(chunk))
                    .group_by(table.c.request_id)
                )
                rows.update((str(i), int(n)) for i, n in connection.execute(query))
    finally:
        engine.dispose()
    return Join(
        ids=len(wanted),
        missing=[i for i in wanted if i not in rows],
        duplicated=[i for i in wanted if rows.get(i, 0) > 1 or answered[i] > 1],
        without_id=without_id,
    )


def read_ids(path: Path) -> Iterable[str]:
    """The ids ``loadgen.py --record-ids`` wrote, one a line."""
    return path.read_text(encoding="ascii").split()


def window(url: str, body: Path, rate: float, seconds: float, ids: Path) -> dict[str, Any]:
    """One open-loop run of ``benchmarks/loadgen.py`` (every latency and 2xx id kept)."""
    command = [PY, LOADGEN, "open", url, str(body), "--rate", str(rate),
               "--duration", str(seconds), "--keep-latencies",
               "--record-ids", str(ids)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank, as loadgen reports it)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def soak(
    args: argparse.Namespace, url: str, body: Path, server: Server, db: str
) -> tuple[list[Sample], Join]:
    """Run the windows back to back; print one line per sample.

    Returns:
        The samples, and the join of every 2xx answer of the run with the audit rows.
    """
    windows = max(1, round(args.minutes * 60 / args.sample_s))
    rows_before, _ = audit_counts(db)
    switches = server.kernel_counts()["preempted"]
    ok_so_far = 0
    answered: Counter[str] = Counter()  # request id -> 2xx answers that carried it
    without_id = 0
    ids_file = body.parent / "ids.txt"
    samples: list[Sample] = []
    started = time.monotonic()
    print(f"{'t s':>6}{'req':>6}{'2xx':>6}{'err':>5}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
          f"{'lag99':>7}{'RSS MiB':>10}{'fds':>5}{'audit':>7}{'2xx sum':>8}{'dup':>4}"
          f"{'CPU s':>7}{'preempt':>8}{'load1':>6}{'miss':>5}{'2x':>4}")  # fmt: skip
    for _ in range(windows):
        result = window(url, body, args.rate, args.sample_s, ids_file)
        latencies = result.pop("latencies_ms")
        ok_so_far += result["ok_2xx"]
        window_ids = Counter(read_ids(ids_file))
        answered.update(window_ids)
        without_id += result["ok_2xx_without_id"]
        # Ids answered in an earlier window too count as duplicated here.
        joined = audit_join(
            db, Counter({i: answered[i] for i in window_ids}), result["ok_2xx_without_id"]
        )
        rss: dict[int, int] = {}
        fds: dict[int, int] = {}
        names: dict[int, str] = {}
        for process in server.processes():
            try:
                rss[process.pid] = process.memory_info().rss
                fds[process.pid] = process.num_fds()
                names[process.pid] = _role(process, server)
            except psutil.NoSuchProcess:
                continue
        rows, duplicates = audit_counts(db)
        switched, switches = switches, server.kernel_counts()["preempted"]
        sample = Sample(
            t_s=time.monotonic() - started,
            load=result,
            latencies_ms=latencies,
            rss=rss,
            fds=fds,
            preempted=switches - switched,
            audit_rows=rows - rows_before,
            duplicates=duplicates,
            ok_so_far=ok_so_far,
            cpu_s=server.cpu_seconds(),
            load1=os.getloadavg()[0],
            join=joined,
            names=names,
        )
        samples.append(sample)
        per_process = "/".join(f"{rss[p] / MiB:.0f}" for p in sorted(rss))
        print(f"{sample.t_s:>6.0f}{result['requests']:>6}{result['ok_2xx']:>6}"
              f"{result['errors']:>5}{result['p50_ms']:>8.2f}{result['p99_ms']:>8.2f}"
              f"{result['max_ms']:>8.1f}{result['send_lag_p99_ms']:>7.1f}{per_process:>10}"
              f"{sum(fds.values()):>5}{sample.audit_rows:>7}{ok_so_far:>8}{duplicates:>4}"
              f"{sample.cpu_s:>7.1f}{sample.preempted:>8}{sample.load1:>6.2f}"
              f"{len(joined.missing) + joined.without_id:>5}{len(joined.duplicated):>4}",
              flush=True)  # fmt: skip
        if not joined.ok:
            print(f"       join: {joined.describe()}", flush=True)
    return samples, audit_join(db, answered, without_id)


def verdict(samples: list[Sample], final: Join, args: argparse.Namespace) -> bool:
    """Print drift and the pass/fail checks; True when all pass."""
    end = samples[-1].t_s
    first = [s for s in samples if s.t_s <= 60.0] or samples[:1]
    last = [s for s in samples if s.t_s > end - 60.0] or samples[-1:]
    rss_first = statistics.fmean(sum(s.rss.values()) for s in first)
    rss_last = statistics.fmean(sum(s.rss.values()) for s in last)
    rss_drift = (rss_last - rss_first) / rss_first
    pids = set(samples[0].rss)
    same_processes = all(set(s.rss) == pids for s in samples)
    per_process = []
    for pid in sorted(pids):
        a = statistics.fmean(s.rss.get(pid, 0) for s in first)
        b = statistics.fmean(s.rss.get(pid, 0) for s in last)
        name = samples[0].names.get(pid, "?")
        per_process.append(f"{name} {pid}: {a / MiB:.0f} -> {b / MiB:.0f} MiB ({(b - a) / a:+.1%})")
    p99_first = percentile([x for s in first for x in s.latencies_ms], 99)
    p99_last = percentile([x for s in last for x in s.latencies_ms], 99)
    every = [x for s in samples for x in s.latencies_ms]
    p99_all = percentile(every, 99)
    requests = sum(s.load["requests"] for s in samples)
    errors = sum(s.load["errors"] for s in samples)
    ok = samples[-1].ok_so_far
    wall = sum(s.load["wall_s"] for s in samples)
    fds_first, fds_last = sum(samples[0].fds.values()), sum(samples[-1].fds.values())
    mismatched = [s for s in samples if s.audit_rows != s.ok_so_far]

    print(f"\n{requests} calls in {end:.0f} s ({requests / end:.1f} req/s offered overall, "
          f"{ok / wall:.1f} 2xx/s while loading); p50 {percentile(every, 50):.2f} ms, "
          f"p99 {p99_all:.2f} ms, max {max(every, default=math.nan):.1f} ms")  # fmt: skip
    print(f"RSS of the service ({len(pids)} processes), mean of the first vs the last minute's "
          f"samples: {rss_first / MiB:.1f} -> {rss_last / MiB:.1f} MiB ({rss_drift:+.2%}); "
          f"{'; '.join(per_process)}")  # fmt: skip
    print(f"p99 first minute {p99_first:.2f} ms, last minute {p99_last:.2f} ms; open fds "
          f"{fds_first} -> {fds_last}; audit rows {samples[-1].audit_rows} vs 2xx {ok}, "
          f"{samples[-1].duplicates} duplicate request ids")  # fmt: skip
    print(f"Join on request id, whole run: {final.describe()}")

    on_time = [s for s in samples if s.load["send_lag_p99_ms"] < ON_TIME_LAG_MS]
    print(f"p99 over the {len(on_time)} of {len(samples)} windows where the generator kept "
          f"its schedule (lag99 < {ON_TIME_LAG_MS:g} ms, i.e. the machine was not "
          f"saturated by other work): "
          f"{percentile([x for s in on_time for x in s.latencies_ms], 99):.2f} ms")  # fmt: skip

    checks = {
        "0 errors": errors == 0,
        f"p99 <= {args.p99_target_ms:g} ms (all calls)": p99_all <= args.p99_target_ms,
        f"RSS drift < {MAX_RSS_DRIFT:.0%} (first vs last minute)": rss_drift < MAX_RSS_DRIFT,
        "no service process replaced": same_processes,
        "audit rows == 2xx at every sample": not mismatched,
        "0 duplicate request ids": samples[-1].duplicates == 0,
        "every 2xx request id has exactly one audit row (joined at every sample and at the end)": (
            final.ok and final.ids > 0 and all(s.join.ok for s in samples)
        ),
        "rate held (>= 95 % of --rate)": ok / wall >= 0.95 * args.rate,
    }
    for name, passed in checks.items():
        print(f"  {'pass' if passed else 'FAIL'}  {name}")
    passed = all(checks.values())
    print("PASS" if passed else "FAIL")
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0, help="Open-loop calls/s.")
    parser.add_argument("--sample-s", type=float, default=10.0, help="Seconds per sample.")
    parser.add_argument("--p99-target-ms", type=float, default=50.0)
    parser.add_argument(
        "--database-url", help="Audit store (default: a SQLite file in a temporary folder)."
    )
    args = parser.parse_args()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = args.database_url or f"sqlite:///{tmp / 'audit.db'}"
        env = {
            "BENTOML_HOME": str(build_store(tmp)),
            "TONLE_SERVING_CONFIG": str(write_config(tmp)),
            "TONLE_DATABASE_URL": db,
            "TONLE_DEV": "1",
            "TONLE_LOG_LEVEL": "WARNING",
        }
        body = tmp / "cds.json"
        body.write_bytes(json.dumps(cds_request()).encode())
        with Server("serving.service:Tonle", env, ROOT) as tonle:
            url = tonle.url + CDS_PATH
            # Past SQLite's first WAL checkpoint, as bench_cds.py does.
            warm(url, body.read_bytes(), n=600)
            print(f"Soak: {args.rate:g} req/s open loop for {args.minutes:g} min, a sample "
                  f"every {args.sample_s:g} s; 127.0.0.1, {os.cpu_count()} CPUs; audit store "
                  f"{db.split(':')[0]}; load average before: "
                  f"{' '.join(f'{x:.2f}' for x in load_before)}")  # fmt: skip
            samples, final = soak(args, url, body, tonle, db)
        print(f"Load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        passed = verdict(samples, final, args)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
