"""What the imaging routes hold while the service runs (built once at start-up)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.registry import StoredModel
from serving.imaging.analysis import CannotAssess, CxrAnalyser, CxrModelRunner
from serving.imaging.batching import Batched
from serving.imaging.config import ImagingConfig
from serving.imaging.results import ResultStore

__all__ = ["BatchInfer", "ImagingState", "attach"]

logger = logging.getLogger(__name__)

# An async model call on a [N,1,S,S] batch -> probabilities [N,L], cams [N,L,h,w] and the
# size of the model call they came from.
BatchInfer = Callable[[np.ndarray], Awaitable[Batched]]


@dataclass
class ImagingState:
    """The analyser, result store and collaborators the imaging routes use.

    Attributes:
        analyser: runs the pipeline with the pinned CXR model.
        store: stored reads and heatmaps (in the audit database).
        config: the ``imaging:`` section of the serving config.
        public_url: base URL used to make links absolute.
        audit: the audit store; reads are committed with their audit rows.
        infer: optional adaptive-batching model call; None runs the model in line.

    Callers are authenticated by the request pipeline (:mod:`serving.http`), not here.
    """

    analyser: CxrAnalyser
    store: ResultStore
    config: ImagingConfig
    public_url: str = "http://127.0.0.1:3000"
    audit: Any = None
    infer: BatchInfer | None = None
    warmed: bool = field(default=False)

    @classmethod
    def build(
        cls,
        stored: StoredModel,
        config: ImagingConfig,
        *,
        site: str,
        public_url: str,
        runner: CxrModelRunner | None = None,
        audit: Any = None,
    ) -> ImagingState:
        """Load the runner for ``stored`` and warm it up on a blank image.

        ``audit`` is the :class:`~serving.audit.store.AuditStore` (its database also
        holds the reads).

        Raises:
            ValueError: no audit store, or thresholds or the model contract do not fit.
            CannotAssess: the warm-up produced invalid outputs.
        """
        from serving.imaging.runner import load_runner

        engine = getattr(audit, "engine", None)
        if engine is None:
            raise ValueError("chest X-ray reads are kept in the audit database: pass its store")
        store = ResultStore(engine)
        runner = runner or load_runner(stored, config.model_threads)
        analyser = CxrAnalyser(stored, runner, config, site)
        state = cls(
            analyser=analyser,
            store=store,
            config=config,
            public_url=public_url,
            audit=audit,
        )
        state.warm_up()
        if config.adaptive_batching:
            from serving.imaging.batching import AdaptiveBatcher

            state.infer = AdaptiveBatcher(
                analyser.runner, config.max_batch_size, config.max_latency_ms
            )
        return state

    def warm_up(self) -> None:
        """One model call on a mid-grey image; readiness waits for it (docs/reliability.md).

        Raises:
            CannotAssess: the model's outputs have the wrong shape or are not finite.
        """
        size = self.analyser.size
        started = time.perf_counter()
        probs, cams = self.analyser.runner.predict(np.full((1, 1, size, size), 0.5, np.float32))
        labels = len(self.analyser.labels)
        if probs.shape != (1, labels) or cams.shape[:2] != (1, labels):
            raise CannotAssess("model-error", "warm-up outputs have the wrong shape", 500)
        # A model with an out-of-distribution gate refuses a grey image (all NaN): fine.
        refused = np.isnan(probs).all() and np.isnan(cams).all()
        if not refused and not (np.isfinite(probs).all() and np.isfinite(cams).all()):
            raise CannotAssess("model-error", "warm-up outputs are not finite", 500)
        self.warmed = True
        logger.info(
            "cxr model %s warmed up in %.1f ms",
            self.analyser.identity.version,
            (time.perf_counter() - started) * 1000,
        )


def attach(runtime: Any) -> ImagingState | None:
    """Build the imaging state for a loaded :class:`~serving.runtime.Runtime`.

    Reads ``runtime.config.imaging``; when it is set, its model must be pinned under
    ``models:``. Stores the state in ``runtime.imaging``; the runtime serves
    it as the ``cxr-triage`` CDS service.

    Returns:
        The state, or None when no imaging section is configured.

    Raises:
        ValueError: the imaging model is not pinned, or its thresholds do not fit.
    """
    config: ImagingConfig | None = getattr(runtime.config, "imaging", None)
    if config is None:
        return None
    stored = runtime.models.get(config.model)
    if stored is None:
        raise ValueError(
            f"imaging.model = {config.model!r} is not pinned under models "
            f"(pinned: {sorted(runtime.models) or 'none'})"
        )
    settings = runtime.settings
    state = ImagingState.build(
        stored,
        config,
        site=settings.site,
        public_url=settings.public_url,
        audit=runtime.audit,
    )
    runtime.imaging = state
    return state
