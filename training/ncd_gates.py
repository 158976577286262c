"""Gates an NCD model must pass: checks before fitting, and before saving.

Before fitting (:func:`preflight`): the ``name:version`` is free in the model store,
every model input has at least one value in the training split, there are enough
events per model input (``gates.min_events_per_predictor``), and enough rows for the
ONNX parity check (``export.parity_min_rows``). After fitting: a minimum test AUROC
(``gates.min_test_auroc``, no override) and, for CVD models, the comparison with the
WHO 2019 chart on the same test patients (:func:`compare_with_who`, rule in
:class:`training.ncd_config.GateConfig`): a model that is not at least as good is
saved only with an explicit reason, and its metadata says so.

Serving reads ``metadata.ncd.who_comparison`` (a :class:`WhoComparison`): a
model's own number may be shown next to the chart only where ``at_least_as_good``
is true.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.details import MetricCI, WhoComparison
from training import ncd_metrics as m
from training.ncd_config import NcdTrainConfig
from training.ncd_evaluate import who_risk_for_table
from training.ncd_table import TrainingDataError

__all__ = ["GateError", "WhoComparison", "check_test_auroc", "compare_with_who", "preflight"]


class GateError(Exception):
    """The model did not pass a gate after fitting; nothing was saved."""


def preflight(
    cfg: NcdTrainConfig, x_train: npt.NDArray[np.float32], events: int, rows: int
) -> list[str]:
    """Checks before any fitting; the lines passed, for the log.

    Args:
        cfg: The training config.
        x_train: Training-split feature matrix (columns in ``cfg.features`` order).
        events: Events within the horizon in the training split.
        rows: Rows available for the parity check (the whole checked table).

    Raises:
        TrainingDataError: naming the setting or feature at fault.
    """
    from models.registry import list_models

    if any(meta.version == cfg.version for meta in list_models(cfg.name)):
        raise TrainingDataError(
            "version", f"{cfg.name}:{cfg.version} is already in the model store (versions "
            "are immutable): give --version or bump the config's version",
        )  # fmt: skip
    empty = [name for j, name in enumerate(cfg.features) if np.isnan(x_train[:, j]).all()]
    if empty:
        raise TrainingDataError(
            empty[0], f"no value in any of the {len(x_train)} training rows: remove "
            f"{', '.join(empty)} from 'features' in the config, or bring data that has it",
        )  # fmt: skip
    per_predictor = events / len(cfg.features)
    if per_predictor < cfg.gates.min_events_per_predictor:
        raise TrainingDataError(
            f"{cfg.outcome}_event", f"{events} events within {cfg.horizon_years:g} years in the "
            f"training split for {len(cfg.features)} inputs = {per_predictor:.1f} per input; "
            f"gates.min_events_per_predictor is {cfg.gates.min_events_per_predictor:g}",
        )  # fmt: skip
    if rows < cfg.export.parity_min_rows:
        raise TrainingDataError(
            "export.parity_min_rows", f"the ONNX parity check needs at least "
            f"{cfg.export.parity_min_rows} rows (the setting's floor); the data has {rows}",
        )  # fmt: skip
    return [
        f"{cfg.name}:{cfg.version} is free in the model store",
        f"{events} events for {len(cfg.features)} inputs ({per_predictor:.1f} per input, "
        f"minimum {cfg.gates.min_events_per_predictor:g})",
        f"parity on {min(rows, cfg.export.parity_max_rows)} rows "
        f"(floor {cfg.export.parity_min_rows})",
    ]


def check_test_auroc(cfg: NcdTrainConfig, auroc: float | None) -> None:
    """Refuse a model whose test AUROC is below ``gates.min_test_auroc``.

    Raises:
        GateError: naming the value and the setting.
    """
    if auroc is None or not auroc >= cfg.gates.min_test_auroc:
        shown = "not measurable" if auroc is None else f"{auroc:.4f}"
        raise GateError(
            f"test AUROC {shown} is below gates.min_test_auroc {cfg.gates.min_test_auroc:g}: "
            "not saved"
        )


def _ci(values: npt.NDArray[np.float64]) -> MetricCI:
    point = float(values[0])
    boots = values[1:][np.isfinite(values[1:])]
    if not np.isfinite(point):
        return MetricCI(value=None)
    if len(boots) < 10:
        return MetricCI(value=point)
    low, high = np.percentile(boots, [2.5, 97.5])
    return MetricCI(value=point, ci_low=float(low), ci_high=float(high))


def _inside(value: float | None, limits: tuple[float, float]) -> bool:
    return value is not None and limits[0] <= value <= limits[1]


def compare_with_who(
    table: pd.DataFrame, risk: npt.NDArray[np.float64], cfg: NcdTrainConfig
) -> WhoComparison | None:
    """The model against the WHO chart on the test rows where the chart gives a risk.

    None for outcomes without a chart (diabetes). The rule is
    :class:`training.ncd_config.GateConfig`'s, stated in ``rule``.
    """
    if cfg.outcome != "cvd":
        return None
    ev, gates = cfg.evaluation, cfg.gates
    who, _ = who_risk_for_table(
        table, ev.who_region, ev.who_country, ev.who_model, ev.who_missing_smoking_as_non_smoker
    )
    sel = np.isfinite(who)
    time = table[f"{cfg.outcome}_time"].to_numpy(dtype=np.float64)
    event = table[f"{cfg.outcome}_event"].to_numpy(dtype=np.float64) == 1.0
    censoring = m.censoring_survival(time, event)
    y, w = m.ipcw_labels(time[sel], event[sel], cfg.horizon_years, censoring)
    c = m.bootstrap_weights(int(sel.sum()), ev.bootstrap_reps, cfg.seed)
    p_model, p_who = np.asarray(risk, dtype=np.float64)[sel], who[sel]
    a_model, a_who = m.auroc(y, p_model, w, c), m.auroc(y, p_who, w, c)
    diff = _ci(a_model - a_who)
    slope_model = _ci(m.calibration_slope_intercept(y, p_model, w, c)[0])
    t_sel, e_sel = time[sel], event[sel]
    oe_model = _ci(m.observed_expected(t_sel, e_sel, p_model, cfg.horizon_years, c))
    discrimination_ok = diff.ci_low is not None and diff.ci_low > -gates.auroc_margin
    calibration_ok = _inside(slope_model.value, gates.slope_limits) and _inside(
        oe_model.value, gates.oe_limits
    )
    where = f"country {ev.who_country}" if ev.who_country else f"region {ev.who_region}"
    return WhoComparison(
        rule=(
            f"at least as good as the chart: lower 95 % bootstrap bound of AUROC(model) - "
            f"AUROC(chart) > -{gates.auroc_margin:g} on the same test patients, and the "
            f"model's calibration slope in {gates.slope_limits[0]:g}-{gates.slope_limits[1]:g} "
            f"and observed/expected in {gates.oe_limits[0]:g}-{gates.oe_limits[1]:g}"
        ),
        chart=f"WHO 2019 {ev.who_model} chart, {where}",
        n=int(sel.sum()),
        events=int(y.sum()),
        auroc_model=_ci(a_model),
        auroc_who=_ci(a_who),
        auroc_difference=diff,
        calibration_slope_model=slope_model,
        calibration_slope_who=_ci(m.calibration_slope_intercept(y, p_who, w, c)[0]),
        observed_expected_model=oe_model,
        observed_expected_who=_ci(m.observed_expected(t_sel, e_sel, p_who, cfg.horizon_years, c)),
        auroc_margin=gates.auroc_margin,
        slope_limits=gates.slope_limits,
        oe_limits=gates.oe_limits,
        discrimination_ok=bool(discrimination_ok),
        calibration_ok=bool(calibration_ok),
        at_least_as_good=bool(discrimination_ok and calibration_ok),
    )
