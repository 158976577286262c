"""Benchmark: an NCD CDS Hooks call with full prefetch vs a constant BentoML endpoint.

Everything runs on 127.0.0.1: this script builds the fixture models in a temporary
store, starts ``bentoml serve`` for Tonle and for the constant service (one at a time,
so they never share the CPU), and drives each with ``benchmarks/loadgen.py`` in a
separate process. It prints:

1. open-loop latency at ``--rate`` req/s (p50/p99, errors) for the CDS call and both
   constant paths; audit rows committed == 2xx responses;
2. maximum throughput (closed loop, ``--connections`` clients) and Tonle's ratio to the
   constant endpoints;
3. where the time of one call goes (stage timings and a cProfile, in-process).

Usage:
    .venv/bin/python benchmarks/bench_cds.py [--rate 100] [--duration 20] [--connections 8]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server import Server, free_port  # noqa: E402
from tests.serving.cds_fixtures import build_store, cds_request, write_config  # noqa: E402

PY = sys.executable
LOADGEN = str(ROOT / "benchmarks" / "loadgen.py")


def load(
    mode: str,
    url: str,
    body: Path,
    args: argparse.Namespace,
    headers: list[str],
    tokens: Path | None = None,
) -> dict:
    command = [PY, LOADGEN, mode, url, str(body), "--duration", str(args.duration),
               "--rate", str(args.rate), "--connections", str(args.connections)]  # fmt: skip
    if tokens is not None:
        command += ["--tokens", str(tokens)]
    for header in headers:
        command += ["--header", header]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def warm(url: str, body: bytes, n: int = 50) -> None:
    with httpx.Client() as client:
        for _ in range(n):
            client.post(url, content=body, headers={"content-type": "application/json"})


def profile_one_call(home: Path, tmp: Path, calls: int = 300) -> str:
    """Stage timings (ms per call) and the top of a cProfile, through the ASGI app."""
    import asyncio

    from serving import cds_hooks
    from serving.app import create_app
    from tests.serving.cds_fixtures import runtime_for

    stages: dict[str, float] = {}

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        is_async = asyncio.iscoroutinefunction(fn)

        async def wrapper_async(*a, **k):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return await fn(*a, **k)
            finally:
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - t

        def wrapper(*a, **k):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - t

        return wrapper_async if is_async else wrapper

    for name in ("read_json", "parse_model", "complete_prefetch", "extract", "assess",
                 "ncd_card", "_commit"):  # fmt: skip
        setattr(cds_hooks, name, timed(name, getattr(cds_hooks, name)))
    body = json.dumps(cds_request()).encode()
    with runtime_for(home, tmp) as runtime:
        app = create_app(runtime.settings)
        app.state.runtime = runtime

        async def run(n: int) -> float:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                headers = {"content-type": "application/json"}
                for _ in range(600):  # WAL steady state, as above
                    await client.post("/cds-services/ncd-cvd-risk", content=body, headers=headers)
                stages.clear()
                t = time.perf_counter()
                for _ in range(n):
                    r = await client.post(
                        "/cds-services/ncd-cvd-risk", content=body, headers=headers
                    )
                    assert r.status_code == 200
                return (time.perf_counter() - t) / n

        per_call = asyncio.run(run(calls))
        lines = [f"in-process per call (ASGI, incl. httpx test client): {per_call * 1000:.2f} ms"]
        for name, total in sorted(stages.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:<18} {total / calls * 1000:7.3f} ms")
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(run(calls))
        profiler.disable()
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream).sort_stats("tottime")
        stats.print_stats(18)
        lines.append(f"cProfile, top functions by own time over {calls} calls:")
        lines.extend(line for line in stream.getvalue().splitlines()[6:] if line.strip())
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="Also run the CDS call with a fresh demo-issuer JWT per request (ES384).",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        home = build_store(tmp)
        config = write_config(tmp)
        db = tmp / "audit.db"
        env = {
            "BENTOML_HOME": str(home),
            "TONLE_SERVING_CONFIG": str(config),
            "TONLE_DATABASE_URL": f"sqlite:///{db}",
            "TONLE_DEV": "1",
            "TONLE_LOG_LEVEL": "WARNING",
        }
        cds_body = tmp / "cds.json"
        cds_body.write_bytes(json.dumps(cds_request()).encode())
        const_body = tmp / "const.json"
        const_body.write_bytes(b'{"hook": "patient-view"}')
        results: dict[str, dict] = {}

        with Server("benchmarks.const_service:Const", {}, ROOT) as const:
            for name, path in (
                ("const @bentoml.api", "/const"),
                ("const mounted ASGI", "/asgi/const"),
            ):
                url = const.url + path
                warm(url, const_body.read_bytes())
                results[f"{name} open"] = load("open", url, const_body, args, [])
                results[f"{name} max"] = load("closed", url, const_body, args, [])

        with Server("serving.service:Tonle", env, ROOT) as tonle:
            url = tonle.url + "/cds-services/ncd-cvd-risk"
            # Steady state: enough calls for SQLite's first WAL checkpoint, after which the
            # WAL file is reused and a commit's fsync no longer also grows the file.
            warm(url, cds_body.read_bytes(), n=600)
            before = sqlite3.connect(db).execute("select count(*) from audit_events").fetchone()[0]
            results["Tonle NCD CDS open"] = load("open", url, cds_body, args, [])
            results["Tonle NCD CDS max"] = load("closed", url, cds_body, args, [])
            after = sqlite3.connect(db).execute("select count(*) from audit_events").fetchone()[0]

        if args.auth:
            from serving.demo_issuer import ensure_demo_issuer, sign_token

            issuers = ensure_demo_issuer(tmp / "issuer", fhir_servers=[])
            port = free_port()
            auth_env = {
                **{k: v for k, v in env.items() if k != "TONLE_DEV"},
                "TONLE_ALLOWED_ISSUERS": str(issuers),
                "TONLE_DATABASE_URL": f"sqlite:///{tmp / 'audit-auth.db'}",
                # The JWT aud must equal the public URL plus the endpoint path.
                "TONLE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            }
            with Server("serving.service:Tonle", auth_env, ROOT, port=port) as server:
                url = server.url + "/cds-services/ncd-cvd-risk"
                warm_tokens = [sign_token(url, directory=tmp / "issuer") for _ in range(600)]
                with httpx.Client() as client:
                    for token in warm_tokens:
                        client.post(url, content=cds_body.read_bytes(), headers={
                            "content-type": "application/json",
                            "authorization": f"Bearer {token}"})  # fmt: skip
                for mode, n in (("open", int(args.rate * args.duration) + 100),
                                ("closed", int(args.duration * 1000))):  # fmt: skip
                    tokens = tmp / f"tokens-{mode}.txt"
                    tokens.write_text(
                        "\n".join(
                            sign_token(url, directory=tmp / "issuer", lifetime_s=240)
                            for _ in range(n)
                        )
                    )
                    results[f"Tonle NCD CDS+JWT {mode}"] = load(
                        mode, url, cds_body, args, [], tokens
                    )

        print(f"\nOpen loop at {args.rate:g} req/s for {args.duration:g} s; closed loop with "
              f"{args.connections} connections for {args.duration:g} s. 127.0.0.1, "
              f"{os.cpu_count()} CPUs.")  # fmt: skip
        print(f"{'endpoint':<32}{'req':>7}{'2xx':>7}{'err':>5}{'rps':>9}{'p50 ms':>9}"
              f"{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")  # fmt: skip
        for name, r in results.items():
            print(f"{name:<32}{r['requests']:>7}{r['ok_2xx']:>7}{r['errors']:>5}"
                  f"{r['throughput_rps']:>9.1f}{r['p50_ms']:>9.2f}{r['p90_ms']:>9.2f}"
                  f"{r['p99_ms']:>9.2f}{r['max_ms']:>9.2f}")  # fmt: skip
        runs = (results["Tonle NCD CDS open"], results["Tonle NCD CDS max"])
        tonle_ok = sum(r["ok_2xx"] for r in runs)
        gave_up = sum(r["errors"] for r in runs)  # client timeouts: answered late, still audited
        rows = after - before
        print(f"\naudit rows written during the runs: {rows}; 2xx responses: {tonle_ok}; "
              f"client gave up (10 s timeout) on {gave_up} -> "
              f"{'EQUAL' if rows == tonle_ok else ('EQUAL incl. late answers' if rows == tonle_ok + gave_up else 'MISMATCH')}")  # noqa: E501  # fmt: skip
        tonle_max = results["Tonle NCD CDS max"]["throughput_rps"]
        for name in ("const @bentoml.api max", "const mounted ASGI max"):
            print(f"max throughput ratio Tonle / {name}: "
                  f"{tonle_max / results[name]['throughput_rps'] * 100:.0f} %")  # fmt: skip
        if not args.no_profile:
            print("\nWhere the time of one call goes:")
            (tmp / "profile").mkdir()
            print(profile_one_call(home, tmp / "profile"))
        print("\nJSON:", json.dumps(results))


if __name__ == "__main__":
    main()
