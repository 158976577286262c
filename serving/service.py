"""The Tonle BentoML service: ``bentoml serve serving.service:Tonle``."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from types import FrameType

import bentoml

from models.logs import configure_logging
from serving.allocator import keep_freed_memory
from serving.app import create_app
from serving.audit import AuditStore
from serving.bento_internals import install_timeout_middleware, refuse_open_bind
from serving.readiness import AuditProbe, Readiness
from serving.runtime import Runtime
from serving.settings import ImportSettings, Settings

__all__ = ["Tonle"]

logger = logging.getLogger(__name__)

app = create_app()


install_timeout_middleware()

# BentoML's OpenTelemetry middleware wraps every request, its receive() and send() in
# spans even where none is recorded (BentoML's default sample rate is 0): about 15 % of
# an NCD call's CPU (docs/performance.md). Untraced, a URL skips it ("/": every URL).
# The chest X-ray upload is never traced: a span per receive() call, hundreds for a
# 15 MB DICOM body, doubled the CPU of reading it; its audit row records each request.
_UNTRACED = ["/v1/imaging/cxr"] if ImportSettings().tracing else ["/"]


# Access logs off: the audit store is the request log, and per-request log lines cost
# ~25 % of throughput here (docs/performance.md); errors are still logged.
@bentoml.service(
    name="tonle",
    # Beyond 64 requests in flight the excess gets 429 at once (health probes bypass it),
    # so admitted requests keep their latency under overload (docs/reliability.md).
    traffic={"timeout": 30, "max_concurrency": 64},
    logging={"access": {"enabled": False}},
    # BentoML's request metrics label series by raw path (ids in URLs: unbounded) and
    # its /metrics is open; Tonle serves its own (serving/metrics.py).
    metrics={"enabled": False},
    tracing={"excluded_urls": _UNTRACED},
)
@bentoml.asgi_app(app, path="/")
class Tonle:
    """Verified ONNX models behind CDS Hooks, FHIR and REST routes."""

    def __init__(self) -> None:
        settings = Settings()
        configure_logging(settings.log_level, settings.log_json)
        refuse_open_bind(settings)
        logging.getLogger("uvicorn.access").disabled = True
        keep_freed_memory()  # before the first upload: large buffers are reused, not refaulted
        self.runtime = Runtime.load(settings)
        app.state.runtime = self.runtime
        assert isinstance(self.runtime.audit, AuditStore)
        self.readiness = app.state.readiness = Readiness(
            self.runtime, AuditProbe(self.runtime.audit)
        )
        self._drain_on_sigterm(settings.shutdown_drain_s)
        # Golden-input warm-up: /readyz stays 503 until every model answered correctly.
        self.runtime.warm_up()
        # Objects made at start-up never change; keep the GC from rescanning them.
        gc.freeze()
        logger.info("Tonle ready with %d model(s)", len(self.runtime.models))

    async def __is_ready__(self) -> bool:
        return await self.readiness.ready()

    @bentoml.on_shutdown  # type: ignore[untyped-decorator]
    def close(self) -> None:
        """After the last in-flight request: commit queued audit rows, close the pool."""
        if isinstance(self.runtime.audit, AuditStore):
            self.runtime.audit.close()

    def _drain_on_sigterm(self, drain_s: float) -> None:
        """On SIGTERM, turn ``/readyz`` to 503 at once but keep serving for ``drain_s``
        seconds (load balancers stop sending), then pass the signal on to uvicorn, which
        stops accepting, lets in-flight requests finish and runs the shutdown hooks."""
        uvicorn_exit = signal.getsignal(signal.SIGTERM)
        if not callable(uvicorn_exit) or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.readiness.draining:
                return
            self.readiness.draining = True
            logger.warning("SIGTERM: not ready; draining for %.1f s, then stopping", drain_s)
            loop.call_soon_threadsafe(loop.call_later, drain_s, uvicorn_exit, signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)
