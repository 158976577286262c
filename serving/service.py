"""The Tonle BentoML service: ``bentoml serve serving.service:Tonle``."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from types import FrameType
from typing import Any

import bentoml
from bentoml._internal.server.http import traffic as bentoml_traffic
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.responses import JSONResponse

from models.logs import configure_logging
from serving.app import create_app
from serving.audit import AuditStore
from serving.readiness import AuditProbe
from serving.runtime import Runtime
from serving.settings import Settings

__all__ = ["Tonle"]

logger = logging.getLogger(__name__)

app = create_app()


class _TimeoutMiddleware(TimeoutMiddleware):
    """BentoML's request timeout, with its timer cancelled once the request is done.

    BentoML 1.4's own never cancels the timer, which keeps each finished request's
    context (tracing span, futures) alive for the full timeout: the worker's memory grows
    by ~6 KB per call until calls/s x timeout requests are held (+40 MB at 220 calls/s
    and 30 s), which the steady-load test reads as drift.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, _send))
        try:
            await waiter
        except TimeoutError:
            if task.cancel():
                body = {"error": f"Not able to process the request in {self.timeout} seconds"}
                await JSONResponse(body, status_code=504)(scope, receive, send)
            return
        finally:
            timer.cancel()
        await task


# BentoML builds its middleware stack from this module attribute when the worker starts,
# after importing this entry module. Drop this once BentoML cancels its own timer.
bentoml_traffic.TimeoutMiddleware = _TimeoutMiddleware  # type: ignore[misc]


# Access logs off: the audit store is the request log, and per-request log lines cost
# ~25 % of throughput here (PERFORMANCE.md); errors are still logged.
@bentoml.service(
    name="tonle",
    # Beyond 64 requests in flight the excess gets 429 at once (health probes bypass it),
    # so admitted requests keep their latency under overload (RELIABILITY.md).
    traffic={"timeout": 30, "max_concurrency": 64},
    logging={"access": {"enabled": False}},
    # OpenTelemetry's ASGI middleware opens a span per receive() call, hundreds for a 15 MB
    # DICOM body, which doubled the CPU of reading it (12 -> 6.5 CPU-ms per upload
    # without); the audit row is that route's record of each request.
    tracing={"excluded_urls": ["/v1/imaging/cxr"]},
)
@bentoml.asgi_app(app, path="/")
class Tonle:
    """Verified ONNX models behind CDS Hooks, FHIR and REST routes."""

    def __init__(self) -> None:
        settings = Settings()
        configure_logging(settings.log_level, settings.log_json)
        logging.getLogger("uvicorn.access").disabled = True
        self.runtime = Runtime.load(settings)
        app.state.runtime = self.runtime
        assert isinstance(self.runtime.audit, AuditStore)
        self.audit_probe = AuditProbe(self.runtime.audit)
        self.draining = False
        self._drain_on_sigterm(settings.shutdown_drain_s)
        # Golden-input warm-up: /readyz stays 503 until every model answered correctly.
        self.runtime.warm_up()
        # Objects made at start-up never change; keep the GC from rescanning them.
        gc.freeze()
        logger.info("Tonle ready with %d model(s)", len(self.runtime.models))

    async def __is_ready__(self) -> bool:
        return self.runtime.ready and not self.draining and await self.audit_probe.ok()

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
            if self.draining:
                return
            self.draining = True
            logger.warning("SIGTERM: not ready; draining for %.1f s, then stopping", drain_s)
            loop.call_soon_threadsafe(loop.call_later, drain_s, uvicorn_exit, signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)
