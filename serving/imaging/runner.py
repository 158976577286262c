"""The CXR network call: :class:`~models.cxr_predictor.CxrPredictor` (ONNX Runtime)."""

from __future__ import annotations

import os

from models.cxr_predictor import CxrPredictor
from models.registry import StoredModel
from serving.imaging.analysis import CxrModelRunner

__all__ = ["load_runner"]


def load_runner(stored: StoredModel, threads: int | None = None) -> CxrModelRunner:
    """The calibrated predictor for a stored CXR artifact.

    Args:
        stored: a verified ``cxr-triage`` artifact.
        threads: ONNX Runtime intra-op threads; default all cores. With adaptive
            batching only the batcher's model thread calls the session (two Python
            threads on one multi-thread session lose ~16 %, docs/performance.md); without
            it, concurrent requests call it from their worker threads.
    """
    predictor: CxrModelRunner = CxrPredictor(stored, threads=threads or (os.cpu_count() or 1))
    return predictor
