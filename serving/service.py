"""The Tonle BentoML service: ``bentoml serve serving.service:Tonle``."""

from __future__ import annotations

import gc
import logging

import bentoml

from models.logs import configure_logging
from serving.app import create_app
from serving.runtime import Runtime
from serving.settings import Settings

__all__ = ["Tonle"]

logger = logging.getLogger(__name__)

app = create_app()


# Access logs off: the audit store is the request log, and per-request log lines cost
# ~25 % of throughput here (PERFORMANCE.md); errors are still logged.
@bentoml.service(
    name="tonle",
    # Beyond 64 requests in flight the excess gets 429 at once (health probes bypass it),
    # so admitted requests keep their latency under overload (RELIABILITY.md).
    traffic={"timeout": 30, "max_concurrency": 64},
    logging={"access": {"enabled": False}},
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
        # Golden-input warm-up: /readyz stays 503 until every model answered correctly.
        self.runtime.warm_up()
        # Objects made at start-up never change; keep the GC from rescanning them.
        gc.freeze()
        logger.info("Tonle ready with %d model(s)", len(self.runtime.models))

    def __is_ready__(self) -> bool:
        return self.runtime.ready
