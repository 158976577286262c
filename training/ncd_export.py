"""Export fitted scikit-learn NCD models to ONNX, prove parity, and save them.

The artifact follows contract C3 (see :mod:`models.ncd_predictor`): input ``features``
float32 ``[N, F]``, output ``probabilities`` float32 ``[N, 2]`` as a plain tensor (no
ZipMap). Nothing is saved to the registry unless the ONNX model reproduces the
scikit-learn probabilities on the given rows to within ``1e-5`` and puts every row in
the same WHO chart band.

skl2onnx 1.20 passes a Python ``bool`` for the ``nodes_missing_value_tracks_true``
attribute of leaf nodes of HistGradientBoosting trees; protobuf 7 refuses a bool in an
int field ("Expected an int, got a boolean"). :func:`to_onnx_model` converts that
value to ``int`` during conversion only (same meaning, 0/1), so the pinned protobuf
can stay; the parity check proves the result.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from models import registry
from models.details import NcdParityReport as ParityReport
from models.metadata import ModelMetadata
from models.ncd_predictor import INPUT_NAME, OUTPUT_NAME
from models.who_cvd import percents_and_bands
from training.distribution import training_distribution

__all__ = [
    "PARITY_TOLERANCE",
    "ExportError",
    "ParityReport",
    "check_parity",
    "export_checked",
    "onnx_probabilities",
    "save_proto",
    "save_verified",
    "to_onnx_model",
    "training_distribution",
]

PARITY_TOLERANCE = 1e-5
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


class ExportError(Exception):
    """The ONNX model does not reproduce the scikit-learn model."""


@contextlib.contextmanager
def _int_missing_tracks() -> Iterator[None]:
    from skl2onnx.common import tree_ensemble

    original: Callable[..., Any] = tree_ensemble.add_node

    def add_node(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(
                kwargs["nodes_missing_value_tracks_true"]
            )
        return original(*args, **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


def to_onnx_model(estimator: Any, n_features: int) -> onnx.ModelProto:
    """Convert a fitted binary classifier to the NCD ONNX contract.

    Args:
        estimator: a fitted scikit-learn classifier or pipeline with ``predict_proba``.
        n_features: number of input columns.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    with _int_missing_tracks():
        proto = convert_sklearn(
            estimator,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options={"zipmap": False},
            target_opset=TARGET_OPSET,
        )
    names = [o.name for o in proto.graph.output]
    if OUTPUT_NAME not in names:
        raise ExportError(f"converted graph has outputs {names}, expected {OUTPUT_NAME!r}")
    return proto  # type: ignore[no-any-return]


def onnx_probabilities(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Column 1 of the ``probabilities`` output for ``x`` (float32 ``[N, F]``)."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]
    return np.asarray(out, dtype=np.float64)[:, 1]


def check_parity(
    estimator: Any,
    proto: onnx.ModelProto,
    x: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
    threads: int = 1,
) -> ParityReport:
    """Compare ONNX and scikit-learn probabilities and WHO bands on the rows ``x``.

    scikit-learn runs with ``threads`` OpenMP threads: on a shared machine more threads
    spin-wait and were many times slower.
    """
    from threadpoolctl import threadpool_limits

    x32 = np.ascontiguousarray(x, dtype=np.float32)
    with threadpool_limits(threads):
        p_sk = np.asarray(estimator.predict_proba(x32), dtype=np.float64)[:, 1]
    p_onnx = onnx_probabilities(proto, x32)
    return ParityReport(
        n_rows=len(x32),
        max_abs_diff=float(np.max(np.abs(p_onnx - p_sk))) if len(x32) else 0.0,
        band_mismatches=int(np.sum(percents_and_bands(p_onnx)[1] != percents_and_bands(p_sk)[1])),
        tolerance=tolerance,
    )


def export_checked(
    estimator: Any, x_parity: np.ndarray, metadata: ModelMetadata, min_rows: int = 10_000
) -> tuple[onnx.ModelProto, ModelMetadata, ParityReport]:
    """Export and check parity on ``x_parity``; the metadata gains ``NcdDetails.parity``.

    Raises:
        ExportError: fewer than ``min_rows`` rows, or parity fails.
    """
    if len(x_parity) < min_rows:
        raise ExportError(f"parity needs at least {min_rows} rows, got {len(x_parity)}")
    proto = to_onnx_model(estimator, len(metadata.features))
    report = check_parity(estimator, proto, x_parity)
    if not report.ok:
        raise ExportError(
            f"ONNX export of {metadata.tag} is not faithful: max |p_onnx - p_sklearn| = "
            f"{report.max_abs_diff:.3g} (limit {report.tolerance:g}), "
            f"{report.band_mismatches} of {report.n_rows} rows in a different band"
        )
    final = metadata.model_copy(
        update={
            "extra": metadata.ncd.model_copy(update={"parity": report}),
            "inputs": {INPUT_NAME: ["N", len(metadata.features)]},
        }
    )
    return proto, final, report


def save_proto(
    proto: onnx.ModelProto, metadata: ModelMetadata, card_dir: Path | None = None
) -> registry.StoredModel:
    """Write the ONNX model to a temporary file and save it through the registry."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(proto, str(path))
        return registry.save(path, metadata, card_dir)


def save_verified(
    estimator: Any,
    x_parity: np.ndarray,
    metadata: ModelMetadata,
    card_dir: Path | None = None,
    min_rows: int = 10_000,
) -> tuple[registry.StoredModel, ParityReport]:
    """Export, check parity on ``x_parity``, and only then save through the registry.

    Raises:
        ExportError: fewer than ``min_rows`` rows, or parity fails.
    """
    proto, final, report = export_checked(estimator, x_parity, metadata, min_rows)
    return save_proto(proto, final, card_dir), report
