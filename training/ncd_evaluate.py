"""Evaluate a 10-year NCD risk model, always side by side with the WHO 2019 chart.

``evaluate_table`` takes a feature table (contract C2) and the model's risks for its
rows and returns an :class:`EvaluationReport`: discrimination (IPCW AUROC at the
horizon, Harrell's and Uno's C-index), calibration (slope, intercept, IPCW Brier,
expected calibration error, a calibration curve) and decision-curve net benefit at
5-30 %, each with a bootstrap 95 % CI, overall and per subgroup (sex, age band,
site). For a CVD model the WHO 2019 lab chart (Southeast Asia region unless
configured otherwise) is scored on the same patients: the comparison set is the rows
where the chart gives a risk (age 40-74, cholesterol and diabetes known); the model
is also reported on all rows. See :mod:`training.ncd_metrics` for how censoring is
handled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel

from models.details import MetricCI
from training import ncd_metrics as m

if TYPE_CHECKING:
    from training.ncd_config import NcdTrainConfig

__all__ = [
    "AGE_BANDS",
    "AUROC_DEFINITION",
    "C_INDEX_DEFINITION",
    "THRESHOLDS",
    "EvaluationReport",
    "GroupMetrics",
    "MetricCI",
    "MetricSet",
    "evaluate_for_config",
    "evaluate_table",
    "who_risk_for_table",
]


THRESHOLDS = [0.05, 0.075, 0.10, 0.15, 0.20, 0.25, 0.30]
AGE_BANDS = (
    (0, 40, "<40"),
    (40, 50, "40-49"),
    (50, 60, "50-59"),
    (60, 70, "60-69"),
    (70, 200, "70+"),
)
AUROC_DEFINITION = (
    "IPCW-weighted AUROC at the horizon (Uno's cumulative/dynamic AUC): cases = events "
    "within the horizon weighted 1/G(T-), controls = event-free beyond the horizon weighted "
    "1/G(horizon), G = Kaplan-Meier of censoring; patients censored earlier without an "
    "event carry weight 0."
)
C_INDEX_DEFINITION = (
    "Harrell's C (unweighted) and Uno's C (IPCW, weights G(T_i-)^-2), both truncated at the "
    "horizon; ties in risk count one half."
)
WHO_REFERENCE = (
    "WHO 2019 CVD risk chart, {kind} model (Kaptoge et al., Lancet Glob Health 2019), "
    "recalibrated to {where}"
)


class MetricSet(BaseModel):
    """All metrics of one set of risks on one group of patients."""

    n: int
    n_known: int
    events: int
    auroc: MetricCI
    harrell_c: MetricCI
    uno_c: MetricCI
    calibration_slope: MetricCI
    calibration_intercept: MetricCI
    brier: MetricCI
    ece: MetricCI
    observed_expected: MetricCI | None = None  # Kaplan-Meier observed / mean predicted
    net_benefit: dict[str, float]
    treat_all_net_benefit: dict[str, float]


class GroupMetrics(BaseModel):
    """Model and (when applicable) WHO chart metrics on the same patients."""

    group: str
    level: str
    model: MetricSet
    who: MetricSet | None = None


class EvaluationReport(BaseModel):
    """Everything ``tonle evaluate`` measures; also stored in the model card JSON."""

    outcome: Literal["cvd", "diabetes"]
    horizon_years: float
    bootstrap_reps: int
    seed: int
    auroc_definition: str = AUROC_DEFINITION
    c_index_definition: str = C_INDEX_DEFINITION
    who_reference: str | None
    n_rows: int
    n_compared: int
    not_compared: dict[str, int]
    model_all_rows: MetricSet
    overall: GroupMetrics
    subgroups: list[GroupMetrics]
    calibration_curve: dict[str, dict[str, list[float]]]
    # Per decile of predicted risk: n, events, predicted, Kaplan-Meier observed (95 % CI).
    calibration_deciles: dict[str, list[dict[str, float]]] = {}
    model_label: str = "trained model"


def _clean(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _ci(values: npt.NDArray[np.float64]) -> MetricCI:
    point = _clean(float(values[0]))
    boots = values[1:][np.isfinite(values[1:])]
    if point is None or len(boots) < 10:
        return MetricCI(value=point)
    low, high = np.percentile(boots, [2.5, 97.5])
    return MetricCI(value=point, ci_low=float(low), ci_high=float(high))


def _ci_debiased(values: npt.NDArray[np.float64]) -> MetricCI:
    """A bias-corrected estimate with its basic (pivotal) bootstrap 95 % CI.

    For a statistic biased upward by sampling noise, such as the expected calibration
    error (a sum of absolute differences, never below 0), the bootstrap replicates sit
    above the plug-in estimate: its percentile interval can exclude the estimate itself
    (an ECE of 0.011 "(0.012 to 0.027)"). The bootstrap measures that bias: the estimate
    is ``2 * plug-in - mean(replicates)`` and the interval ``2 * plug-in - (97.5 %,
    2.5 % quantiles)``, both floored at 0, and the estimate always lies inside it.
    """
    point = _clean(float(values[0]))
    boots = values[1:][np.isfinite(values[1:])]
    if point is None or len(boots) < 10:
        return MetricCI(value=point)
    q_low, q_high = np.percentile(boots, [2.5, 97.5])
    low, high = max(0.0, 2 * point - float(q_high)), max(0.0, 2 * point - float(q_low))
    corrected = min(max(2 * point - float(boots.mean()), low), high)
    return MetricCI(value=corrected, ci_low=low, ci_high=high)


def _metric_set(
    time: npt.NDArray[np.float64],
    event: npt.NDArray[np.bool_],
    risk: npt.NDArray[np.float64],
    horizon: float,
    c: npt.NDArray[np.float64],
    censoring: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
) -> MetricSet:
    y_all, w_all = m.ipcw_labels(time, event, horizon, censoring)
    # Patients with unknown status have weight 0: leaving them out is exact and faster.
    known = w_all > 0
    y, w, p, ck = y_all[known], w_all[known], risk[known], c[known]
    slope, intercept = m.calibration_slope_intercept(y, p, w, ck)
    nb, treat_all = m.net_benefit(y, p, w, np.asarray(THRESHOLDS))
    return MetricSet(
        n=len(risk),
        n_known=int(known.sum()),
        events=int(y.sum()),
        auroc=_ci(m.auroc(y, p, w, ck)),
        harrell_c=_ci(m.concordance(time, event, risk, horizon, c)),
        uno_c=_ci(m.concordance(time, event, risk, horizon, c, censoring)),
        calibration_slope=_ci(slope),
        calibration_intercept=_ci(intercept),
        brier=_ci(m.brier(y, p, w, ck)),
        ece=_ci_debiased(m.ece(y, p, w, ck)),
        observed_expected=_ci(m.observed_expected(time, event, risk, horizon, c)),
        net_benefit={f"{t:g}": _clean(v) or 0.0 for t, v in zip(THRESHOLDS, nb, strict=True)},
        treat_all_net_benefit={
            f"{t:g}": _clean(v) or 0.0 for t, v in zip(THRESHOLDS, treat_all, strict=True)
        },
    )


def who_risk_for_table(
    table: pd.DataFrame,
    region: str | None = "A05GBDR_014_SEA",
    country: str | None = None,
    model: Literal["lab", "nonlab"] = "lab",
    missing_smoking_as_non_smoker: bool = False,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.object_]]:
    """WHO 2019 chart risk per row (NaN where the chart gives none) and the reasons.

    ``missing_smoking_as_non_smoker`` is an explicit, reported evaluation assumption for
    data that rarely records smoking; it is never used for advice.
    """
    from models.who_cvd import who_cvd_reasons_batch, who_cvd_risk_batch

    names = ["age", "smoking", "sbp"] + (["total_chol", "diabetes"] if model == "lab" else ["bmi"])
    columns: dict[str, Any] = {"sex": table["sex"].astype(str).to_numpy()}
    for name in names:
        columns[name] = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)
    if missing_smoking_as_non_smoker:
        columns["smoking"] = np.nan_to_num(columns["smoking"], nan=0.0)
    reasons = who_cvd_reasons_batch(model, **columns)
    risk = who_cvd_risk_batch(model, **columns, region=region, country=country, invalid="nan")
    return np.asarray(risk, dtype=np.float64), reasons


def _age_band(age: npt.NDArray[np.float64]) -> npt.NDArray[np.object_]:
    out = np.full(len(age), "unknown", dtype=object)
    for low, high, label in AGE_BANDS:
        out[(age >= low) & (age < high)] = label
    return out


def evaluate_table(
    table: pd.DataFrame,
    risk: npt.NDArray[np.float64],
    outcome: Literal["cvd", "diabetes"],
    *,
    horizon: float = 10.0,
    bootstrap_reps: int = 200,
    seed: int = 0,
    who_region: str | None = "A05GBDR_014_SEA",
    who_country: str | None = None,
    compare_who: bool | None = None,
    who_model: Literal["lab", "nonlab"] = "lab",
    who_missing_smoking_as_non_smoker: bool = False,
    model_label: str = "trained model",
) -> EvaluationReport:
    """Evaluate ``risk`` (one per row of ``table``) against the table's outcomes.

    Args:
        table: feature table with ``<outcome>_event`` and ``<outcome>_time`` columns.
        risk: the model's 10-year risk per row.
        outcome: ``"cvd"`` or ``"diabetes"``.
        horizon: years.
        bootstrap_reps: bootstrap replicates for the 95 % CIs (0 = none).
        seed: bootstrap seed.
        who_region: GBD region for the WHO chart comparison.
        who_country: ISO alpha-3 country instead of a region.
        compare_who: score the WHO chart too; default: only for ``cvd``.
        who_model: the chart compared: ``"lab"`` (cholesterol, diabetes) or ``"nonlab"``
            (BMI), e.g. for data without total cholesterol.
        who_missing_smoking_as_non_smoker: score the chart for rows without a smoking
            record as non-smokers (stated in the report); default: leave them out.
        model_label: what the evaluated risks are, in the report's words.
    """
    time = table[f"{outcome}_time"].to_numpy(dtype=np.float64)
    event = table[f"{outcome}_event"].to_numpy(dtype=np.float64) == 1.0
    risk = np.asarray(risk, dtype=np.float64)
    if compare_who is None:
        compare_who = outcome == "cvd"
    n = len(table)
    if compare_who:
        who, reasons = who_risk_for_table(
            table, who_region, who_country, who_model, who_missing_smoking_as_non_smoker
        )
        compared = np.isfinite(who)
        counts = pd.Series([r for r in reasons if r is not None], dtype=object).value_counts()
        not_compared = {str(k): int(v) for k, v in counts.items()}
        where = f"country {who_country}" if who_country else f"region {who_region}"
        kind = "laboratory-based" if who_model == "lab" else "non-laboratory (BMI)"
        text = WHO_REFERENCE.format(where=where, kind=kind)
        if who_missing_smoking_as_non_smoker:
            assumed = int(table["smoking"].isna().sum())
            text += (
                f"; ASSUMPTION: {assumed} patients without a smoking record were scored "
                "as non-smokers for the chart only"
            )
        reference: str | None = text
    else:
        who = np.full(n, np.nan)
        compared = np.ones(n, dtype=bool)
        not_compared = {}
        reference = None
    c_all = m.bootstrap_weights(n, bootstrap_reps, seed)
    censoring = m.censoring_survival(time, event)
    model_all = _metric_set(time, event, risk, horizon, c_all, censoring)

    def group_metrics(group: str, level: str, mask: npt.NDArray[np.bool_]) -> GroupMetrics:
        sel = mask & compared
        c = c_all[sel]
        model_set = _metric_set(time[sel], event[sel], risk[sel], horizon, c, censoring)
        who_set = (
            _metric_set(time[sel], event[sel], who[sel], horizon, c, censoring)
            if compare_who
            else None
        )
        return GroupMetrics(group=group, level=level, model=model_set, who=who_set)

    overall = (
        group_metrics("all", "all", np.ones(n, dtype=bool))
        if compare_who or not compared.all()
        else GroupMetrics(group="all", level="all", model=model_all)
    )
    subgroups: list[GroupMetrics] = []
    levels: dict[str, npt.NDArray[np.object_]] = {
        "sex": table["sex"].astype(str).to_numpy(dtype=object),
        "age band": _age_band(table["age"].to_numpy(dtype=np.float64)),
    }
    if "site" in table.columns:
        levels["site"] = table["site"].astype(str).to_numpy(dtype=object)
    for group, values in levels.items():
        for level in sorted({str(v) for v in values}):
            mask = (values == level) & compared
            if mask.sum() >= 20:
                subgroups.append(group_metrics(group, level, values == level))

    curve: dict[str, dict[str, list[float]]] = {}
    deciles: dict[str, list[dict[str, float]]] = {}
    y, w = m.ipcw_labels(time[compared], event[compared], horizon, censoring)
    named = {"model": risk[compared]} | ({"who": who[compared]} if compare_who else {})
    for name, p in named.items():
        deciles[name] = m.km_decile_calibration(time[compared], event[compared], p, horizon)
        pred, obs, weight = m.calibration_bins(y, p, w)
        keep = np.isfinite(pred) & np.isfinite(obs)
        curve[name] = {
            "predicted": pred[keep].tolist(),
            "observed": obs[keep].tolist(),
            "weight": weight[keep].tolist(),
        }
    return EvaluationReport(
        outcome=outcome,
        horizon_years=horizon,
        bootstrap_reps=bootstrap_reps,
        seed=seed,
        who_reference=reference,
        n_rows=n,
        n_compared=int(compared.sum()),
        not_compared=not_compared,
        model_all_rows=model_all,
        overall=overall,
        subgroups=subgroups,
        calibration_curve=curve,
        calibration_deciles=deciles,
        model_label=model_label,
    )


def evaluate_for_config(
    table: pd.DataFrame,
    risk: npt.NDArray[np.float64],
    cfg: NcdTrainConfig,
    *,
    bootstrap_reps: int | None = None,
    compare_who: bool | None = None,
    model_label: str = "trained model",
) -> EvaluationReport:
    """:func:`evaluate_table` with a training config's outcome, horizon, seed and WHO chart.

    Args:
        table: feature table with the config's outcome columns.
        risk: the model's risk per row.
        cfg: the model's training config (its ``evaluation`` section picks the chart).
        bootstrap_reps: bootstrap replicates; default: the config's.
        compare_who: score the WHO chart too; default: only for ``cvd``.
        model_label: what ``risk`` is, in the report's words.
    """
    ev = cfg.evaluation
    return evaluate_table(
        table,
        risk,
        cfg.outcome,
        horizon=cfg.horizon_years,
        bootstrap_reps=ev.bootstrap_reps if bootstrap_reps is None else bootstrap_reps,
        seed=cfg.seed,
        who_region=ev.who_region,
        who_country=ev.who_country,
        who_model=ev.who_model,
        who_missing_smoking_as_non_smoker=ev.who_missing_smoking_as_non_smoker,
        compare_who=compare_who,
        model_label=model_label,
    )
