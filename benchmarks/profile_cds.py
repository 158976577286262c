"""Where the time of one NCD CDS Hooks call goes, stage by stage (in-process).

Builds the fixture models, a demo JWT issuer and a SQLite audit store (WAL,
``synchronous=FULL``) in a temporary folder, loads the runtime the way the service
does, and sends ``--calls`` requests one after another straight into the ASGI app (no
HTTP client, no BentoML middleware), each with its own freshly signed ES384 token. The
real handler runs; its stages are timed by wrapping the functions it calls. Prints the
median and p90 of each stage in ms:

- auth: JWT verify (header checks, key lookup, ES384 signature, claims) and jti
  insert (the durable replay store, run on a worker thread);
- JSON parse (strict: no duplicate keys, NaN or deep nesting) and pydantic request;
- FHIR mapping (prefetch -> features), the models (ONNX risk + explanation batch, WHO
  chart, rest of ``assess``), card building, the explanation page's record (stored with
  the audit row), response serialisation;
- audit commit: waiting for the group commit of the row (one fsync), and the write on
  the committer thread itself;
- the rest of the handler and routing (``other``).

Usage:
    .venv/bin/python benchmarks/profile_cds.py [--calls 500] [--no-auth] [--cprofile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.details import FeatureBins  # noqa: E402
from serving import assess as assess_module  # noqa: E402
from serving import cds_hooks  # noqa: E402
from serving.app import create_app  # noqa: E402
from serving.audit import AuditStore  # noqa: E402
from serving.http import pipeline  # noqa: E402
from serving.runtime import Runtime  # noqa: E402
from tests.serving.cds_fixtures import build_store, cds_request, runtime_for  # noqa: E402

PATH = "/cds-services/ncd-cvd-risk"
PUBLIC = "http://testserver"
# Enough calls for SQLite's first WAL checkpoint: afterwards the WAL file is reused
# and a commit's fsync no longer also grows the file (steady state).
WARM_CALLS = 600


class Stages:
    """Per-call stage timings: ``add`` accumulates into the current call."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.calls: list[dict[str, float]] = []
        self._patched: list[tuple[Any, str, Any]] = []

    def add(self, name: str, seconds: float) -> None:
        self.current[name] = self.current.get(name, 0.0) + seconds

    def end_call(self, total: float) -> None:
        self.current["total"] = total
        self.calls.append(self.current)
        self.current = {}

    def wrap(
        self, name: str, fn: Callable[..., Any], clock: Callable[[], float] = time.perf_counter
    ) -> Callable[..., Any]:
        """``fn`` timed under ``name`` (sync or async) by ``clock`` (wall time by default;
        ``time.thread_time`` for the CPU time of the thread it runs on)."""
        if asyncio.iscoroutinefunction(fn):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = clock()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self.add(name, clock() - start)

            return timed_async

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, clock() - start)

        return timed

    def patch(
        self, owner: Any, attr: str, name: str, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        """Time ``owner.attr`` under ``name`` (see :meth:`wrap`) until :meth:`restore`."""
        original = getattr(owner, attr)
        self._patched.append((owner, attr, original))
        setattr(owner, attr, self.wrap(name, original, clock))

    def restore(self) -> None:
        """Put back every function :meth:`patch` replaced."""
        for owner, attr, original in reversed(self._patched):
            setattr(owner, attr, original)
        self._patched.clear()


# (stage, part of another stage shown indented) in print order; "other" is computed.
ROWS = (
    ("auth: JWT verify", False),
    ("auth: jti insert", False),
    ("JSON parse", False),
    ("pydantic request", False),
    ("prefetch check", False),
    ("FHIR mapping", False),
    ("models: assess", False),
    ("ONNX risk + explanation", True),
    ("WHO chart", True),
    ("card building", False),
    ("explanation page record", False),
    ("response serialisation", False),
    ("audit commit (wait)", False),
    ("monitoring metrics", False),
    ("committer write incl. fsync", True),
    ("other (routing, handler)", False),
    ("total", False),
)
_TOP_LEVEL = [name for name, nested in ROWS if not nested and name not in ("total",)]


@contextmanager
def instrumented(runtime: Runtime, stages: Stages) -> Iterator[None]:
    """Wrap the functions the handler calls with timers; restore them afterwards."""
    patch = stages.patch
    auth = runtime.cds_auth
    if auth is not None:
        patch(auth, "authenticate", "auth total")
        patch(auth, "_admit", "auth: jti insert")
    for attr, name in (
        ("read_json", "JSON parse"),
        ("parse_model", "pydantic request"),
        ("complete_prefetch", "prefetch check"),
        ("extract", "FHIR mapping"),
        ("assess", "models: assess"),
        ("ncd_card", "card building"),
        ("explanation_record", "explanation page record"),
        ("response_body", "response serialisation"),
    ):
        patch(cds_hooks, attr, name)
    patch(pipeline, "commit", "audit commit (wait)")
    patch(pipeline, "observe_answer", "monitoring metrics")
    patch(cds_hooks, "observe_features", "monitoring metrics")
    patch(assess_module, "who_for", "WHO chart")
    for predictor in runtime.ncd.values():
        patch(predictor, "explain", "ONNX risk + explanation")
    if isinstance(runtime.audit, AuditStore):
        committer = runtime.audit._committer
        patch(committer, "_write", "committer write incl. fsync")
    try:
        yield
    finally:
        stages.restore()


async def post(app: Any, path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> int:
    """POST ``chunks`` (the body as the server hands it over) to the ASGI ``app``; its status."""
    size = sum(len(chunk) for chunk in chunks)
    headers = [*headers, (b"host", b"testserver"), (b"content-length", str(size).encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": headers, "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
    }  # fmt: skip
    sent = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent == len(chunks):
            return {"type": "http.disconnect"}
        sent += 1
        return {"type": "http.request", "body": chunks[sent - 1], "more_body": sent < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _call(app: Any, body: bytes, token: str | None) -> int:
    headers = [(b"content-type", b"application/json")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return await post(app, PATH, [body], headers)


def _tokens(issuer_dir: Path | None, n: int) -> list[str | None]:
    if issuer_dir is None:
        return [None] * n
    from serving.demo_issuer import sign_token

    return [sign_token(PUBLIC + PATH, directory=issuer_dir, lifetime_s=300) for _ in range(n)]


def profile(calls: int = 500, *, auth: bool = True, cprofile: bool = False) -> str:
    """Run ``calls`` sequential calls in-process; return the stage table as text."""
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        home = build_store(tmp)
        settings: dict[str, Any] = {"dev": not auth, "public_url": PUBLIC}
        issuer_dir: Path | None = None
        if auth:
            from serving.demo_issuer import ensure_demo_issuer

            issuer_dir = tmp / "issuer"
            settings["allowed_issuers"] = ensure_demo_issuer(issuer_dir, fhir_servers=[])
            # Outside dev mode the service needs its link key (explanation-page links).
            settings["link_secret"] = secrets.token_hex(32)
        body = json.dumps(cds_request()).encode()
        with runtime_for(home, tmp, **settings) as runtime:
            _with_training_distribution(runtime)
            app = create_app(runtime.settings)
            app.state.runtime = runtime
            warm_tokens = _tokens(issuer_dir, WARM_CALLS)
            tokens = _tokens(issuer_dir, calls)
            stages = Stages()

            async def run(batch: list[str | None]) -> None:
                for token in batch:
                    start = time.perf_counter()
                    status = await _call(app, body, token)
                    stages.end_call(time.perf_counter() - start)
                    if status != 200:
                        raise RuntimeError(f"the call answered {status}, expected 200")

            with instrumented(runtime, stages):
                asyncio.run(run(warm_tokens))
                stages.calls.clear()
                profiler = cProfile.Profile() if cprofile else None
                if profiler is not None:
                    profiler.enable()
                asyncio.run(run(tokens))
                if profiler is not None:
                    profiler.disable()
            runtime.audit.close()  # type: ignore[union-attr]
    return _table(stages.calls, auth) + (_top(profiler) if profiler is not None else "")


def _with_training_distribution(runtime: Runtime) -> None:
    """Give the fixture models ten drift bins per feature (as trained artifacts record),
    so the monitoring stage counts what it counts in production."""
    for predictor in runtime.ncd.values():
        meta = predictor.metadata
        bins = {
            spec.name: FeatureBins(
                edges=[float(i) for i in range(1, 10)], proportions=[0.1] * 10, n=1000
            )
            for spec in meta.features
        }
        extra = meta.ncd.model_copy(update={"training_distribution": bins})
        predictor.metadata = meta.model_copy(update={"extra": extra})


def _table(calls: list[dict[str, float]], auth: bool) -> str:
    for call in calls:
        if "auth total" in call:
            call["auth: JWT verify"] = call.pop("auth total") - call.get("auth: jti insert", 0.0)
        call["other (routing, handler)"] = call["total"] - sum(
            call.get(name, 0.0) for name in _TOP_LEVEL if name != "other (routing, handler)"
        )
    median_total = statistics.median(call["total"] for call in calls)
    lines = [
        f"One NCD CDS Hooks call (ncd-cvd-risk, full prefetch, "
        f"{'ES384 JWT' if auth else 'dev mode, no auth'}), in-process, "
        f"{len(calls)} sequential calls:",
        f"{'stage':<34}{'median ms':>10}{'p90 ms':>9}{'share':>8}",
    ]
    for name, nested in ROWS:
        values = [call.get(name, 0.0) * 1000 for call in calls]
        if not any(values):
            continue
        values.sort()
        median = statistics.median(values)
        p90 = values[int(0.9 * (len(values) - 1))]
        label = ("  " if nested else "") + name
        share = f"{median / (median_total * 1000) * 100:6.1f} %" if name != "total" else ""
        lines.append(f"{label:<34}{median:>10.3f}{p90:>9.3f}{share:>8}")
    lines.append(
        "Stage medians need not add up to the median total. The audit wait is mostly the "
        "fsync; under load one fsync serves many calls (group commit)."
    )
    return "\n".join(lines)


def _top(profiler: cProfile.Profile, n: int = 25) -> str:
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(n)
    text = "\n".join(line for line in stream.getvalue().splitlines()[6:] if line.strip())
    return f"\n\ncProfile, top {n} functions by own time (main thread):\n{text}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--no-auth", action="store_true", help="Dev mode (as bench_cds.py).")
    parser.add_argument("--cprofile", action="store_true", help="Also print a cProfile top.")
    args = parser.parse_args()
    print(profile(args.calls, auth=not args.no_auth, cprofile=args.cprofile))


if __name__ == "__main__":
    main()
