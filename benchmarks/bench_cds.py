"""Benchmark: an NCD CDS Hooks call with full prefetch vs a constant BentoML endpoint.

Everything runs on 127.0.0.1: this script builds the fixture models in a temporary
store, starts ``bentoml serve`` for Tonle and for the constant service, and drives them
with ``benchmarks/loadgen.py`` in a separate process, one endpoint at a time (the idle
server uses no CPU meanwhile). It prints:

1. open-loop latency at ``--rate`` req/s (p50/p99, errors) for the CDS call and both
   constant paths; audit rows committed == 2xx responses;
2. maximum throughput (closed loop, ``--connections`` clients) in ``--rounds`` rounds
   that alternate the endpoints (other work on the machine then slows all of them
   alike), the server's CPU time per request, and Tonle's ratio to the constant
   endpoints: the median of the per-round ratios;
3. where the time of one call goes (``benchmarks/profile_cds.py``, in-process).

With ``--against DIR`` (another checkout, e.g. ``git worktree add --detach DIR
<commit>``), that checkout's service (its own fixture models, its own audit database)
is one more endpoint in every round, and the closed-loop throughput and CPU per
request of this checkout are also given as a ratio to it, round by round: this
machine's speed drifts by up to 2x within minutes, so only such interleaved ratios
compare two versions.

Usage:
    .venv/bin/python benchmarks/bench_cds.py [--rate 100] [--duration 15] [--rounds 5]
        [--against DIR] [--postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from sqlalchemy import create_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.profile_cds import profile  # noqa: E402
from benchmarks.server import Server, free_port, postgres_cpu_seconds  # noqa: E402
from serving.audit.records import OPERATOR_SERVICES  # noqa: E402
from tests.serving.cds_fixtures import build_store, cds_request, write_config  # noqa: E402
from tests.serving.db_fixtures import postgres_database  # noqa: E402

PY = sys.executable
LOADGEN = str(ROOT / "benchmarks" / "loadgen.py")
CONST_PATHS = {"const @bentoml.api": "/const", "const mounted ASGI": "/asgi/const"}
CDS_PATH = "/cds-services/ncd-cvd-risk"
AGAINST = "Tonle NCD CDS against"


def fixtures_of(tree: Path, tmp: Path) -> tuple[Path, Path]:
    """The fixture model store and serving config built by ``tree``'s own code (its
    metadata format may differ from this checkout's)."""
    script = (
        "import sys; from pathlib import Path; "
        "from tests.serving.cds_fixtures import build_store, write_config; "
        "print(build_store(Path(sys.argv[1]))); print(write_config(Path(sys.argv[1])))"
    )
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([PY, "-c", script, str(tmp)], cwd=tree, check=True, text=True,
                         capture_output=True, env=environment)  # fmt: skip
    home, config = out.stdout.split()[-2:]
    return Path(home), Path(config)


def load(
    mode: str,
    url: str,
    body: Path,
    args: argparse.Namespace,
    server: Server,
    tokens: Path | None = None,
) -> dict:
    """One loadgen run; adds the server's CPU time per answered request (ms)."""
    command = [PY, LOADGEN, mode, url, str(body), "--duration", str(args.duration),
               "--rate", str(args.rate), "--connections", str(args.connections)]  # fmt: skip
    if tokens is not None:
        command += ["--tokens", str(tokens)]
    cpu, database = server.cpu_seconds(), postgres_cpu_seconds()
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict = json.loads(out.stdout)
    answered = max(1, sum(result["statuses"].values()))
    result["server_cpu_ms"] = (server.cpu_seconds() - cpu) * 1000 / answered
    result["postgres_cpu_ms"] = (postgres_cpu_seconds() - database) * 1000 / answered
    result["load1"] = os.getloadavg()[0]
    return result


def warm(url: str, body: bytes, n: int = 50) -> None:
    with httpx.Client() as client:
        for _ in range(n):
            client.post(url, content=body, headers={"content-type": "application/json"})


def audit_rows(url: str) -> int:
    """Audit rows of calls in the database at ``url``: the operators' reads (a scrape of
    ``/metrics``) are audited too, and not counted."""
    query = "select service_id, count(*) from audit_events group by service_id"
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            counts = connection.exec_driver_sql(query).fetchall()
    finally:
        engine.dispose()
    return sum(int(n) for service, n in counts if service not in OPERATOR_SERVICES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="Closed-loop rounds.")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--postgres", action="store_true",
                        help="audit stores in fresh databases on the tests' PostgreSQL "
                             "server (TONLE_TEST_POSTGRES_URL) instead of SQLite; 'PG "
                             "ms/req' is the CPU its processes used per request")  # fmt: skip
    parser.add_argument("--against", type=Path, default=None,
                        help="Another checkout, served beside this one (see above).")  # fmt: skip
    parser.add_argument(
        "--auth",
        action="store_true",
        help="Also run the CDS call with a fresh demo-issuer JWT per request (ES384).",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as databases:
        tmp = Path(tmpdir)
        home = build_store(tmp)
        config = write_config(tmp)

        def database(name: str) -> str:
            """A fresh audit database: a SQLite file ``name``, or (``--postgres``) a new
            database on the tests' PostgreSQL server, dropped at the end."""
            if args.postgres:
                return databases.enter_context(postgres_database("tonle_bench"))
            return f"sqlite:///{tmp / name}"

        db = database("audit.db")
        env = {
            "BENTOML_HOME": str(home),
            "TONLE_SERVING_CONFIG": str(config),
            "TONLE_DATABASE_URL": db,
            "TONLE_DEV": "1",
            "TONLE_LOG_LEVEL": "WARNING",
        }
        cds_body = tmp / "cds.json"
        cds_body.write_bytes(json.dumps(cds_request()).encode())
        const_body = tmp / "const.json"
        const_body.write_bytes(b'{"hook": "patient-view"}')
        results: dict[str, dict] = {}
        rounds: list[dict[str, dict]] = []

        with contextlib.ExitStack() as servers:
            const = servers.enter_context(Server("benchmarks.const_service:Const", {}, ROOT))
            targets = [(name, const, const.url + path, const_body)
                       for name, path in CONST_PATHS.items()]  # fmt: skip
            if args.against is not None:
                other = tmp / "against"
                other.mkdir()
                other_home, other_config = fixtures_of(args.against, other)
                other_env = {**env, "BENTOML_HOME": str(other_home),
                             "TONLE_SERVING_CONFIG": str(other_config),
                             "TONLE_DATABASE_URL": database("against.db"),
                             "PYTHONPATH": str(args.against)}  # fmt: skip
                against = servers.enter_context(
                    Server("serving.service:Tonle", other_env, args.against)
                )
                targets.append((AGAINST, against, against.url + CDS_PATH, cds_body))
            tonle = servers.enter_context(Server("serving.service:Tonle", env, ROOT))
            targets.append(("Tonle NCD CDS", tonle, tonle.url + CDS_PATH, cds_body))
            for _, _, url, body in targets[:-1]:
                warm(url, body.read_bytes(), n=600 if url.endswith(CDS_PATH) else 50)
            # Steady state: enough calls for SQLite's first WAL checkpoint, after which the
            # WAL file is reused and a commit's fsync no longer also grows the file.
            warm(targets[-1][2], cds_body.read_bytes(), n=600)
            before = audit_rows(db)
            for name, server, url, body in targets:
                results[f"{name} open"] = load("open", url, body, args, server)
            for i in range(args.rounds):
                rounds.append({})
                for name, server, url, body in targets[:: -1 if i % 2 else 1]:
                    rounds[i][name] = results[f"{name} max #{i + 1}"] = load(
                        "closed", url, body, args, server
                    )
            after = audit_rows(db)

        if args.auth:
            from serving.demo_issuer import ensure_demo_issuer, sign_token

            issuers = ensure_demo_issuer(tmp / "issuer", fhir_servers=[])
            port = free_port()
            auth_env = {
                **{k: v for k, v in env.items() if k != "TONLE_DEV"},
                "TONLE_ALLOWED_ISSUERS": str(issuers),
                "TONLE_DATABASE_URL": database("audit-auth.db"),
                # The JWT aud must equal the public URL plus the endpoint path.
                "TONLE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            }
            with Server("serving.service:Tonle", auth_env, ROOT, port=port) as server:
                url = server.url + CDS_PATH
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
                        mode, url, cds_body, args, server, tokens
                    )

        print(f"\nOpen loop at {args.rate:g} req/s for {args.duration:g} s; closed loop ('max') "
              f"with {args.connections} connections for {args.duration:g} s, {args.rounds} "
              f"rounds alternating the endpoints. 127.0.0.1, {os.cpu_count()} CPUs. Load "
              f"average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
              f"after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")  # fmt: skip
        postgres = f"{'PG ms/req':>10}" if args.postgres else ""
        print(f"{'endpoint':<30}{'req':>7}{'2xx':>7}{'err':>5}{'rps':>8}{'p50 ms':>8}"
              f"{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'CPU ms/req':>11}{postgres}"
              f"{'load1':>7}")  # fmt: skip
        for name, r in results.items():
            postgres = f"{r['postgres_cpu_ms']:>10.3f}" if args.postgres else ""
            print(f"{name:<30}{r['requests']:>7}{r['ok_2xx']:>7}{r['errors']:>5}"
                  f"{r['throughput_rps']:>8.1f}{r['p50_ms']:>8.2f}{r['p90_ms']:>8.2f}"
                  f"{r['p99_ms']:>8.2f}{r['max_ms']:>8.2f}{r['server_cpu_ms']:>11.3f}"
                  f"{postgres}{r['load1']:>7.2f}")  # fmt: skip
        runs = [
            r
            for name, r in results.items()
            if name.startswith("Tonle NCD CDS ") and not name.startswith(AGAINST)
        ]
        tonle_ok = sum(r["ok_2xx"] for r in runs)
        gave_up = sum(r["errors"] for r in runs)  # client timeouts: answered late, still audited
        rows = after - before
        print(f"\naudit rows written during the runs: {rows}; 2xx responses: {tonle_ok}; "
              f"client gave up (10 s timeout) on {gave_up} -> "
              f"{'EQUAL' if rows == tonle_ok else ('EQUAL incl. late answers' if rows == tonle_ok + gave_up else 'MISMATCH')}")  # noqa: E501  # fmt: skip
        for name in CONST_PATHS:
            ratios = [r["Tonle NCD CDS"]["throughput_rps"] / r[name]["throughput_rps"]
                      for r in rounds]  # fmt: skip
            cpu = statistics.median(r[name]["server_cpu_ms"] / r["Tonle NCD CDS"]["server_cpu_ms"]
                                    for r in rounds)  # fmt: skip
            print(f"max throughput ratio Tonle / {name}: median {statistics.median(ratios):.0%} "
                  f"(rounds: {', '.join(f'{x:.0%}' for x in ratios)}); "
                  f"server CPU per request ratio: {cpu:.0%}")  # fmt: skip
        if args.against is not None:
            ratios = [r["Tonle NCD CDS"]["throughput_rps"] / r[AGAINST]["throughput_rps"]
                      for r in rounds]  # fmt: skip
            cpu = [r["Tonle NCD CDS"]["server_cpu_ms"] / r[AGAINST]["server_cpu_ms"]
                   for r in rounds]  # fmt: skip
            print(f"this checkout / {args.against}: max throughput median "
                  f"{statistics.median(ratios):.2f} (rounds: "
                  f"{', '.join(f'{x:.2f}' for x in ratios)}); server CPU per request median "
                  f"{statistics.median(cpu):.2f}")  # fmt: skip
        if not args.no_profile:
            print("\nWhere the time of one call goes (benchmarks/profile_cds.py --no-auth):")
            print(profile(300, auth=False))
        print("\nJSON:", json.dumps(results))


if __name__ == "__main__":
    main()
