"""Where the CPU of one chest X-ray upload goes, stage by stage (in-process).

Builds an untrained 224 px ``CxrNet`` (as ``bench_cxr_http.py`` does) in a temporary
store, loads the runtime the way the service does (SQLite audit store, dev mode, no
adaptive batching, display copy off unless ``--display-short-side``), and sends
``--calls`` uploads of one DICOM one after another straight into the ASGI app (no HTTP
client, no BentoML middleware; the body arrives in 64 KiB messages as uvicorn sends
it). The real handler runs; its stages are timed in CPU time (``time.thread_time`` of
the thread each runs on) by wrapping the functions it calls. Prints the median CPU-ms
of each stage and of the whole call (``time.process_time``: every thread, the audit
committer's included) for the 512 px DICOM and the 3000 x 2500 radiograph of
``bench_cxr_http.py``; "outside" = total - model - decode, the in-process counterpart
of that benchmark's "server CPU per request outside the model, decode and floor" (with
no HTTP, there is no floor to take off).

Usage:
    .venv/bin/python benchmarks/profile_cxr.py [--calls 60] [--cprofile] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gc
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_cxr_http import build_model, radiograph, small_radiograph  # noqa: E402
from benchmarks.profile_cds import Stages, post  # noqa: E402
from tests.serving.db_fixtures import postgres_database  # noqa: E402
from tests.serving.imaging.cxr_fixtures import dicom_bytes  # noqa: E402

PATH = "/v1/imaging/cxr"
CHUNK = 65536  # uvicorn hands a body over in messages of at most this size
WARM_CALLS = 20

# (stage, nested in the stage above it) in print order; "other" is computed.
ROWS = (
    ("read body", False),
    ("decode", False),
    ("quality gate", False),
    ("model input", False),
    ("display copy", False),
    ("model", False),
    ("finish (thresholds, heatmap source)", False),
    ("audit row (all of it)", False),
    ("read row (JSON, heatmap bytes)", True),
    ("audit commit (wait)", True),
    ("monitoring metrics", True),
    ("committer write incl. fsync", False),
    ("response JSON", False),
)
_TOP_LEVEL = [name for name, nested in ROWS if not nested]


@contextmanager
def instrumented(runtime: Any, stages: Stages) -> Iterator[None]:
    """Wrap the functions the handler calls with CPU timers; restore them afterwards."""
    import models.cxr_preprocess as preprocess
    import models.cxr_quality as quality
    from serving import metrics
    from serving.http import pipeline
    from serving.imaging import analysis, exchange, routes

    patch = functools.partial(stages.patch, clock=time.thread_time)

    state = runtime.imaging
    patch(routes, "read_body", "read body")
    patch(preprocess, "decode_dicom", "decode")
    patch(quality, "assess", "quality gate")
    patch(preprocess, "to_model_input", "model input")
    # ONNX Runtime's own threads: the process's CPU (nothing else runs meanwhile).
    patch(state.analyser.runner, "predict", "model", clock=time.process_time)
    patch(analysis.CxrAnalyser, "finish", "finish (thresholds, heatmap source)")
    patch(pipeline, "record", "audit row (all of it)")
    patch(exchange.ResultStore, "record", "read row (JSON, heatmap bytes)")
    patch(state.audit, "record", "audit commit (wait)")
    patch(state.audit._committer, "_write", "committer write incl. fsync")
    patch(metrics, "observe_answer", "monitoring metrics")  # imported when called
    patch(metrics, "count_outcome", "monitoring metrics")
    patch(routes, "JSONResponse", "response JSON")
    try:
        yield
    finally:
        stages.restore()


def _chunks(body: bytes) -> list[bytes]:
    """The body as uvicorn hands it over (cut before the clock starts)."""
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]


async def _call(app: Any, chunks: list[bytes]) -> int:
    return await post(app, PATH, chunks, [(b"content-type", b"application/dicom")])


@contextmanager
def _in_line(enabled: bool) -> Iterator[None]:
    """Run the route's worker-thread calls in the event loop's thread (for cProfile,
    which sees one thread)."""
    from serving.imaging import routes

    if not enabled:
        yield
        return
    original = routes.run_in_threadpool

    async def direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    routes.run_in_threadpool = direct  # type: ignore[assignment]
    try:
        yield
    finally:
        routes.run_in_threadpool = original  # type: ignore[assignment]


def profile(
    inputs: dict[str, bytes],
    calls: int,
    *,
    display_short_side: int,
    cprofile: bool,
    in_line: bool = False,
    model_threads: int | None = None,
    database_url: str | None = None,
) -> str:
    """``calls`` sequential uploads of each input in-process; the stage tables as text
    (audit store: ``database_url``, else a new SQLite file)."""
    from serving.app import create_app
    from serving.runtime import Runtime
    from serving.settings import Settings

    out: list[str] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        home = tmp / "store"
        name, version = build_model(home, "resnet-small", tmp)
        config = {
            "models": {name: version},
            "imaging": {"model": name, "adaptive_batching": False,
                        "display_short_side": display_short_side},
        }  # fmt: skip
        if model_threads:
            config["imaging"]["model_threads"] = model_threads
        (tmp / "serving.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        os.environ["BENTOML_HOME"] = str(home)
        settings = Settings(
            serving_config=tmp / "serving.yaml",
            database_url=database_url or f"sqlite:///{tmp / 'audit.db'}",
            dev=True,
            public_url="http://testserver",
        )
        runtime = Runtime.load(settings)
        runtime.warm_up()
        app = create_app(settings)
        app.state.runtime = runtime
        gc.freeze()  # as the service does after start-up
        try:
            for label, body in inputs.items():
                stages = Stages()

                chunks = _chunks(body)

                async def run(
                    n: int, chunks: list[bytes] = chunks, stages: Stages = stages
                ) -> None:
                    for _ in range(n):
                        start = time.process_time()
                        status = await _call(app, chunks)
                        stages.end_call(time.process_time() - start)
                        if status != 200:
                            raise RuntimeError(f"the call answered {status}, expected 200")

                with instrumented(runtime, stages), _in_line(cprofile or in_line):
                    asyncio.run(run(WARM_CALLS))
                    stages.calls.clear()
                    profiler = cProfile.Profile(time.process_time) if cprofile else None
                    if profiler is not None:
                        profiler.enable()
                    asyncio.run(run(calls))
                    if profiler is not None:
                        profiler.disable()
                out.append(_table(label, len(body), stages.calls))
                if profiler is not None:
                    out.append(_top(profiler, 70, os.environ.get("SORT", "tottime")))
        finally:
            runtime.audit.close()
    return "\n\n".join(out)


def _table(label: str, size: int, calls: list[dict[str, float]]) -> str:
    for call in calls:
        call["other (routing, handler, threads)"] = call["total"] - sum(
            call.get(name, 0.0) for name in _TOP_LEVEL
        )
        call["outside model and decode"] = (
            call["total"] - call.get("model", 0.0) - call.get("decode", 0.0)
        )
    lines = [
        f"{label} DICOM ({size / 1e6:.1f} MB), {len(calls)} sequential uploads in-process, "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}:",
        f"{'stage':<40}{'median CPU-ms':>14}{'p90':>9}",
    ]
    rows = [*ROWS, ("other (routing, handler, threads)", False), ("total", False),
            ("outside model and decode", False)]  # fmt: skip
    for name, nested in rows:
        values = sorted(call.get(name, 0.0) * 1000 for call in calls)
        if not any(values):
            continue
        p90 = values[int(0.9 * (len(values) - 1))]
        prefix = "  " if nested and not name.startswith("  ") else ""
        lines.append(f"{prefix + name:<40}{statistics.median(values):>14.3f}{p90:>9.3f}")
    return "\n".join(lines)


def _top(profiler: cProfile.Profile, n: int = 30, sort: str = "tottime") -> str:
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats(sort).print_stats(n)
    text = "\n".join(line for line in stream.getvalue().splitlines()[6:] if line.strip())
    return f"cProfile, top {n} functions by own time (worker calls run in line):\n{text}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--small", type=int, default=512, help="side of the small input")
    parser.add_argument("--display-short-side", type=int, default=0)
    parser.add_argument("--only", choices=["small", "large"], default=None)
    parser.add_argument("--cprofile", action="store_true", help="Also print a cProfile top.")
    parser.add_argument("--in-line", action="store_true", help="No worker threads.")
    parser.add_argument("--model-threads", type=int, default=None)
    parser.add_argument("--postgres", action="store_true",
                        help="audit store in a fresh database on the tests' PostgreSQL "
                             "server (TONLE_TEST_POSTGRES_URL) instead of SQLite")  # fmt: skip
    args = parser.parse_args()
    inputs: dict[str, bytes] = {}
    if args.only != "large":
        inputs[f"{args.small}x{args.small}"] = dicom_bytes(small_radiograph(args.small))
    if args.only != "small":
        inputs["3000x2500"] = dicom_bytes(radiograph())
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database("tonle_profile")) if args.postgres else None
        print(profile(inputs, args.calls, display_short_side=args.display_short_side,
                      cprofile=args.cprofile, in_line=args.in_line,
                      model_threads=args.model_threads, database_url=url))  # fmt: skip


if __name__ == "__main__":
    main()
