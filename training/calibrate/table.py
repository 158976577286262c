"""Screening outcomes at each threshold: the WHO/TDR calibration table, vectorised.

A person is screen-positive at threshold ``t`` when ``score >= t``. For every
threshold at once (one sort, cumulative sums, ``searchsorted``):

* ``tp, fp, tn, fn``: people **with a reference result**, counted (integers);
* sensitivity, specificity, PPV, NPV from those cells, each person weighted by
  their inverse-probability sampling weight (1 when every weight is 1: plain counts);
* ``referred_fraction``: screen-positives among **everyone screened**;
* cases found among the referred = referred x PPV; ``yield_per_1000`` = cases found per
  1,000 screened; ``nnt`` = tests per case found = referred / cases found;
* ``cost_per_case`` = cost of testing everyone referred / cases found.

Confidence intervals are Wilson score intervals. With sampling weights the proportion
is the weighted one and ``n`` is Kish's effective sample size ``(sum w)^2 / sum w^2``
(a common approximation; it equals the plain Wilson interval when all weights are 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.intervals import wilson

__all__ = [
    "CI_COLUMNS",
    "COLUMNS",
    "EXTRA_COLUMNS",
    "INTERFACE_COLUMNS",
    "ThresholdTable",
    "threshold_table",
    "wilson",
]

# The columns other tools read, in this order; CI and extra columns follow them.
INTERFACE_COLUMNS = (
    "threshold", "tp", "fp", "tn", "fn", "sensitivity", "specificity", "ppv", "npv",
    "referred_fraction", "nnt", "yield_per_1000", "cost_per_case",
)  # fmt: skip
CI_COLUMNS = tuple(
    f"{rate}_ci_{end}"
    for rate in ("sensitivity", "specificity", "ppv", "npv")
    for end in ("low", "high")
)
EXTRA_COLUMNS = ("screened", "with_reference", "referred", "cases_found", "cost_per_1000")
COLUMNS = INTERFACE_COLUMNS + CI_COLUMNS + EXTRA_COLUMNS


@dataclass(frozen=True)
class ThresholdTable:
    """One array per column of :data:`COLUMNS`, one entry per threshold."""

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["threshold"])

    def row(self, index: int) -> dict[str, float]:
        """The numbers at one threshold (NaN: undefined)."""
        return {name: float(values[index]) for name, values in self.columns.items()}


def _at_or_above(scores: np.ndarray, values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold, the sum of ``values`` over people with ``score >= threshold``."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    below = np.concatenate(([0.0], np.cumsum(values[order])))
    return np.asarray(below[-1] - below[np.searchsorted(sorted_scores, thresholds, "left")])


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def threshold_table(
    scores: np.ndarray,
    reference: np.ndarray,
    thresholds: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    costs: np.ndarray | None = None,
) -> ThresholdTable:
    """The calibration table for one group of people.

    Args:
        scores: ``[N]`` CAD scores of everyone screened in the group.
        reference: ``[N]`` 1.0 / 0.0, NaN for people without a reference result.
        thresholds: ``[T]`` thresholds, ascending.
        weights: ``[N]`` inverse-probability sampling weights of people with a
            reference (ignored for the others); None: all 1.
        costs: ``[N]`` cost of each person's confirmatory test; None: no costs
            (cost columns are NaN).

    Returns:
        The table.
    """
    scores = np.asarray(scores, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    n = scores.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    verified = ~np.isnan(reference)
    case = verified & (reference == 1.0)
    control = verified & (reference == 0.0)

    def cells(mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """(count, weight sum, weight-square sum) at or above each threshold, and totals."""
        s, wm = scores[mask], w[mask]
        above = [_at_or_above(s, v, t) for v in (np.ones_like(wm), wm, wm * wm)]
        totals = [float(len(wm)), float(wm.sum()), float((wm * wm).sum())]
        below = [total - a for total, a in zip(totals, above, strict=True)]
        return (*above, *below)

    tp, tp_w, tp_w2, fn, fn_w, fn_w2 = cells(case)
    fp, fp_w, fp_w2, tn, tn_w, tn_w2 = cells(control)
    cols: dict[str, np.ndarray] = {"threshold": t}
    cols.update(tp=np.rint(tp), fp=np.rint(fp), tn=np.rint(tn), fn=np.rint(fn))
    rates = {
        "sensitivity": (tp_w, fn_w, tp_w2 + fn_w2),
        "specificity": (tn_w, fp_w, tn_w2 + fp_w2),
        "ppv": (tp_w, fp_w, tp_w2 + fp_w2),
        "npv": (tn_w, fn_w, tn_w2 + fn_w2),
    }
    intervals: dict[str, np.ndarray] = {}
    for name, (hit, miss, square) in rates.items():
        total = hit + miss
        cols[name] = _ratio(hit, total)
        n_eff = _ratio(total * total, square)
        n_eff = np.where(np.isnan(n_eff), 0.0, n_eff)
        intervals[f"{name}_ci_low"], intervals[f"{name}_ci_high"] = wilson(
            np.nan_to_num(cols[name]), n_eff
        )
    referred = _at_or_above(scores, np.ones(n), t)
    cases_found = referred * np.nan_to_num(cols["ppv"])
    cols["referred_fraction"] = referred / n
    cols["nnt"] = _ratio(referred, cases_found)
    cols["yield_per_1000"] = 1000.0 * cases_found / n
    total_cost = (
        np.full(len(t), np.nan) if costs is None else _at_or_above(scores, np.asarray(costs), t)
    )
    cols["cost_per_case"] = _ratio(total_cost, cases_found)
    cols.update(intervals)
    cols["screened"] = np.full(len(t), float(n))
    cols["with_reference"] = np.full(len(t), float(verified.sum()))
    cols["referred"] = referred
    cols["cases_found"] = cases_found
    cols["cost_per_1000"] = 1000.0 * total_cost / n
    return ThresholdTable({name: np.asarray(cols[name], dtype=np.float64) for name in COLUMNS})
