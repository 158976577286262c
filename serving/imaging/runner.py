"""The CXR network call: ONNX Runtime on ``[N, 1, S, S]`` -> probabilities and maps."""

from __future__ import annotations

import os
import threading

import numpy as np

from models.onnx_runtime import open_session
from models.registry import StoredModel
from serving.imaging.analysis import CxrModelRunner

__all__ = ["OrtCxrRunner", "load_runner"]


class OrtCxrRunner:
    """ONNX Runtime session for a C7 artifact; sigmoid of ``logits`` as probabilities.

    Used when ``models.cxr_predictor`` (which applies the artifact's calibration) is
    not available. One lock serialises calls: two Python threads on one multi-thread
    session lose ~16 % (PERFORMANCE.md); concurrency comes from batching instead.
    """

    def __init__(self, stored: StoredModel, threads: int | None = None) -> None:
        self.session = open_session(stored, threads)
        self._lock = threading.Lock()

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``[N, L]`` and raw maps ``[N, L, h, w]`` for a batch."""
        with self._lock:
            logits, cam = self.session.run(
                ["logits", "cam"], {"image": np.ascontiguousarray(batch, dtype=np.float32)}
            )
        probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
        return probs.astype(np.float32), np.asarray(cam, dtype=np.float32)


def load_runner(stored: StoredModel, threads: int | None = None) -> CxrModelRunner:
    """The runner for a stored CXR artifact.

    Prefers IMG-B's ``models.cxr_predictor.CxrPredictor`` (calibrated) when present.
    """
    try:
        from models.cxr_predictor import CxrPredictor
    except ImportError:
        return OrtCxrRunner(stored, threads)
    # Two intra-op threads: one client's latency is the target (PERFORMANCE.md).
    predictor: CxrModelRunner = CxrPredictor(stored, threads=threads or (os.cpu_count() or 1))
    return predictor
