"""Benchmark: the per-call cost of authentication and the audit commit.

Prints p50/p99 in milliseconds, measured in-process on this machine, for:

1. ``CdsAuthenticator.authenticate`` of a fresh ES384 / RS384 token (signature check,
   claims, and the durable ``jti`` insert into the replay store);
2. ``AuditStore.record`` of one audit row (one durable commit) on SQLite (WAL,
   synchronous=FULL) and on PostgreSQL (synchronous_commit=on) when reachable, and
   the throughput of 16 threads recording at once (group commit: rows per commit);
3. ``ApiKeyAuthenticator.authenticate`` (one indexed read + sha256).

These are the parts of an NCD CDS Hooks call that SERVE-A owns; the whole call is
measured by ``benchmarks/bench_cds.py``.

Usage: .venv/bin/python benchmarks/bench_auth_audit.py [--n 300] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import event

from serving.audit import AuditRecord, AuditStore
from serving.auth import ApiKeyAuthenticator, CdsAuthenticator
from serving.demo_issuer import ensure_demo_issuer, sign_token

ENDPOINT = "http://127.0.0.1:3000/cds-services/ncd-cvd-risk"


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {p50 * 1000:7.3f} ms   p99 {p99 * 1000:7.3f} ms   (n={len(ordered)})"


def _time(work: Callable[[int], object], n: int) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        work(i)
        samples.append(time.perf_counter() - started)
    return samples


def _row(i: int) -> AuditRecord:
    return AuditRecord(
        request_id=uuid.uuid4().hex,
        hook_instance=str(uuid.uuid4()),
        service_id="ncd-cvd-risk",
        card_ids=[str(uuid.uuid4())],
        caller_iss="https://demo-ehr.tonle.example",
        caller_sub="bench",
        model_name="cvd-risk",
        model_version="1.0.0",
        model_sha256="a" * 64,
        input_sha256="b" * 64,
        outcome="advice",
        patient_ref=f"Patient/{i}",
        latency_ms=1.0,
    )


def bench_store(label: str, url: str, issuer_dir: Path, n: int) -> None:
    store = AuditStore.open(url)
    print(f"\n[{label}] {store.dialect}")
    single = _time(lambda i: store.record(_row(i)), n)
    print(f"  audit record (1 commit)     {_percentiles(single)}")
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    threads = 16
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: store.record(_row(i)), range(n)))
    elapsed = time.perf_counter() - started
    print(
        f"  audit record, {threads} threads   {n / elapsed:7.0f} rows/s in {len(commits)} commits "
        f"(one at a time: ~{1 / statistics.median(single):.0f} rows/s)"
    )

    auth = CdsAuthenticator.from_file(issuer_dir / "allowed-issuers.yaml", store)
    for alg in ("ES384", "RS384"):
        tokens = [f"Bearer {sign_token(ENDPOINT, directory=issuer_dir, alg=alg)}" for _ in range(n)]

        async def run(tokens: list[str] = tokens) -> list[float]:
            samples = []
            for token in tokens:
                started = time.perf_counter()
                await auth.authenticate(token, ENDPOINT)
                samples.append(time.perf_counter() - started)
            return samples

        print(f"  JWT {alg} + jti insert      {_percentiles(asyncio.run(run()))}")

    _info, key = store.create_api_key("bench", "bench")
    keys = ApiKeyAuthenticator(store)
    print(
        f"  API key check               {_percentiles(_time(lambda i: keys.authenticate(key), n))}"
    )
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="Calls per measurement.")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="An existing PostgreSQL database to use a throw-away schema in ('' to skip).",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        issuer_dir = Path(tmp) / "issuer"
        ensure_demo_issuer(issuer_dir)
        bench_store("sqlite", f"sqlite:///{tmp}/bench.db", issuer_dir, args.n)
        if args.postgres:
            import psycopg
            from sqlalchemy import make_url

            schema = f"bench_{uuid.uuid4().hex[:8]}"
            url = make_url(args.postgres)
            conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as admin:
                    admin.execute(f"CREATE SCHEMA {schema}")
            except psycopg.OperationalError as exc:
                print(f"\n[postgresql] skipped: {type(exc).__name__}")
                return
            try:
                scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
                bench_store("postgresql", scoped.render_as_string(False), issuer_dir, args.n)
            finally:
                with psycopg.connect(conninfo, autocommit=True) as admin:
                    admin.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
