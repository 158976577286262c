"""ONNX Runtime sessions configured for a small CPU server."""

from __future__ import annotations

import os

import onnxruntime as ort

from models.registry import StoredModel

__all__ = ["open_session"]


def open_session(stored: StoredModel, threads: int | None = None) -> ort.InferenceSession:
    """An inference session for a verified artifact.

    Spinning is off: several sessions used in turn in one process nearly doubled
    latency with it on (docs/performance.md). Threads default to the cores we have.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        str(stored.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
