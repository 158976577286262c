"""``tonle recalibrate MODEL --data FILE``: refit a stored NCD model's intercept and slope locally.

The cheap fix when a model ranks patients well but its risks are off for the local
population: ``logit p' = a + b * logit p``, fitted by weighted maximum likelihood on
the local cohort's outcome at the horizon (inverse-probability-of-censoring weights,
as in training). The ONNX graph is kept and two steps are appended to it (clip,
logit, affine, sigmoid), checked against the same formula in float64 on every local
row, and saved as a new version whose metadata names its parent (``NcdDetails.parent``
with the parent's sha256) and the fitted ``NcdDetails.recalibration``. The WHO chart
comparison of the parent no longer applies: ``NcdDetails.who_comparison`` is None until
``tonle evaluate`` on held-out local patients shows otherwise, so serving shows the
chart, not this model's number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper

from models.details import CalibrationCheck, ParentRef, Recalibration
from models.ncd_predictor import OUTPUT_NAME
from training import ncd_metrics as m

__all__ = ["RecalibrationError", "append_recalibration", "fit_recalibration", "recalibrate"]

_EPS = 1e-7
_PARITY_TOLERANCE = 1e-5


class RecalibrationError(ValueError):
    """The local data cannot recalibrate this model, or the result is not faithful."""


def fit_recalibration(
    y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], w: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """Weighted logistic fit of ``y`` on ``logit p``: ``(intercept a, slope b)``."""
    q = np.clip(p, _EPS, 1 - _EPS)
    z = np.log(q / (1 - q))
    design = np.column_stack([np.ones_like(z), z])
    beta = np.array([0.0, 1.0])
    for _ in range(50):
        mu = 1.0 / (1.0 + np.exp(-(design @ beta)))
        grad = design.T @ (w * (y - mu))
        hess = (design * (w * mu * (1 - mu))[:, None]).T @ design
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def recalibrated(p: npt.NDArray[np.float64], a: float, b: float) -> npt.NDArray[np.float64]:
    """``sigmoid(a + b * logit p)`` in float64 (the reference for the ONNX graph)."""
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(1.0 / (1.0 + np.exp(-(a + b * np.log(q / (1 - q))))))


def append_recalibration(proto: onnx.ModelProto, a: float, b: float) -> onnx.ModelProto:
    """A copy of ``proto`` whose ``probabilities`` output is recalibrated by ``a``, ``b``."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    raw = "probabilities_before_recalibration"
    for node in graph.node:
        node.output[:] = [raw if name == OUTPUT_NAME else name for name in node.output]
        node.input[:] = [raw if name == OUTPUT_NAME else name for name in node.input]

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    one = const("recal_one", 1.0)
    nodes = [
        helper.make_node("Gather", [raw, const("recal_col", 1, np.int64)], ["recal_p"], axis=1),
        helper.make_node(
            "Clip", ["recal_p", const("recal_lo", _EPS), const("recal_hi", 1 - _EPS)], ["recal_q"]
        ),
        helper.make_node("Sub", [one, "recal_q"], ["recal_1mq"]),
        helper.make_node("Div", ["recal_q", "recal_1mq"], ["recal_odds"]),
        helper.make_node("Log", ["recal_odds"], ["recal_logit"]),
        helper.make_node("Mul", ["recal_logit", const("recal_b", b)], ["recal_bz"]),
        helper.make_node("Add", ["recal_bz", const("recal_a", a)], ["recal_u"]),
        helper.make_node("Sigmoid", ["recal_u"], ["recal_p1"]),
        helper.make_node("Sub", [one, "recal_p1"], ["recal_p0"]),
        helper.make_node("Unsqueeze", ["recal_p0", const("recal_ax", [1], np.int64)], ["r0"]),
        helper.make_node("Unsqueeze", ["recal_p1", "recal_ax"], ["r1"]),
        helper.make_node("Concat", ["r0", "r1"], [OUTPUT_NAME], axis=1),
    ]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 2]))
    onnx.checker.check_model(out)
    return out


def recalibrate(
    stored: Any,
    table: pd.DataFrame,
    version: str,
    card_root: Path,
    bootstrap_reps: int = 200,
) -> tuple[Any, Recalibration]:
    """Recalibrate ``stored`` on ``table`` (already checked) and save it as ``version``.

    Returns:
        The new stored model and the ``NcdDetails.recalibration`` record.

    Raises:
        RecalibrationError: too few events, or the new graph is not faithful.
        models.registry.ArtifactError: ``version`` exists already.
    """
    from models.ncd_predictor import NcdPredictor
    from training.ncd_card import write_model_card
    from training.ncd_config import NcdTrainConfig
    from training.ncd_evaluate import evaluate_for_config
    from training.ncd_export import onnx_probabilities, save_proto
    from training.ncd_report import write_report
    from training.ncd_table import feature_matrix, manifest_hash

    meta = stored.metadata
    cfg = NcdTrainConfig.model_validate(meta.config)
    x = feature_matrix(table, [f.name for f in meta.features])
    proto = onnx.load(str(stored.onnx_path))
    p_old = onnx_probabilities(proto, x)
    time = table[f"{cfg.outcome}_time"].to_numpy(dtype=np.float64)
    event = table[f"{cfg.outcome}_event"].to_numpy(dtype=np.float64) == 1.0
    h = cfg.horizon_years
    y, w = m.ipcw_labels(time, event, h)
    events = int(y[w > 0].sum())
    if events < 20:
        raise RecalibrationError(f"{events} events within {cfg.horizon_years:g} years: need 20")
    a, b = fit_recalibration(y, p_old, w)
    new = append_recalibration(proto, a, b)
    p_new = onnx_probabilities(new, x)
    diff = float(np.abs(p_new - recalibrated(p_old, a, b)).max())
    if not diff <= _PARITY_TOLERANCE:
        raise RecalibrationError(f"recalibrated graph differs from the formula by {diff:.3g}")
    ones = np.ones((len(y), 1))
    record = Recalibration(
        intercept=a,
        slope=b,
        rows=len(table),
        events=events,
        data_manifest_sha256=manifest_hash(table),
        before=CalibrationCheck(
            observed_expected=float(m.observed_expected(time, event, p_old, h, ones)[0]),
            calibration_slope=float(m.calibration_slope_intercept(y, p_old, w, ones)[0][0]),
        ),
        after_in_sample=CalibrationCheck(
            observed_expected=float(m.observed_expected(time, event, p_new, h, ones)[0]),
            calibration_slope=float(m.calibration_slope_intercept(y, p_new, w, ones)[0][0]),
        ),
        max_abs_diff_vs_formula=diff,
    )
    card_dir = card_root.resolve() / meta.name / version
    final = meta.model_copy(
        update={
            "version": version,
            "sha256": "",
            "metrics": {},  # the parent's test metrics do not describe this model
            "description": meta.description + f" Recalibrated locally from {meta.tag}.",
            "extra": meta.ncd.model_copy(
                update={
                    "parent": ParentRef(tag=meta.tag, sha256=meta.sha256),
                    "recalibration": record,
                    "who_comparison": None,
                    "card_dir": str(card_dir),
                }
            ),
        }
    )
    report = evaluate_for_config(table, p_new, cfg, bootstrap_reps=bootstrap_reps)
    write_report(report, card_dir, f"In-sample evaluation of {meta.name}:{version} (recalibrated)")
    write_model_card(final, report, card_dir)
    saved = save_proto(new, final, card_dir)
    NcdPredictor(saved)  # loads and checks the new graph as serving will
    return saved, record
