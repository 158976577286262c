"""Survival-aware metrics for 10-year NCD risk, vectorised over bootstrap replicates.

Every metric takes a weight matrix ``c`` of shape ``(n, R)``: column 0 is all ones
(the point estimate) and the other columns are bootstrap multiplicities (how often
each patient was drawn), so all replicates are computed in one pass.

Censoring: the outcome "event within ``horizon`` years" is unknown for a patient
censored before the horizon without an event. Such patients get weight 0, and the
others are weighted by the inverse probability of remaining uncensored (IPCW), with
the censoring distribution ``G`` estimated by Kaplan-Meier (censoring as the
"event"): cases (event at ``T <= horizon``) get ``1 / G(T-)``, controls (followed
event-free past the horizon) get ``1 / G(horizon)``. Under independent censoring the
weighted known-status patients stand for the whole cohort; dropping censored patients
without weights would over-represent short follow-up and bias risk upwards (more
events relative to known non-events), and treating them as non-events biases it
downwards. ``G`` is floored at 0.05 so a handful of late patients cannot dominate.

The IPCW-weighted AUROC equals Uno's cumulative/dynamic AUC at the horizon; the
C-indices are Harrell's (unweighted) and Uno's (weights ``G(T_i-)^-2``), both
truncated at the horizon. ``G`` is estimated once, not per bootstrap replicate.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models import intervals

__all__ = [
    "G_FLOOR",
    "auroc",
    "bootstrap_weights",
    "brier",
    "calibration_bins",
    "calibration_slope_intercept",
    "censoring_survival",
    "concordance",
    "ece",
    "ipcw_labels",
    "km_decile_calibration",
    "km_risk",
    "net_benefit",
    "observed_expected",
]

G_FLOOR = 0.05
F64 = npt.NDArray[np.float64]


def bootstrap_weights(n: int, reps: int, seed: int) -> F64:
    """``(n, reps + 1)`` weights: column 0 all ones, then multinomial bootstrap counts."""
    rng = np.random.default_rng(seed)
    out = np.ones((n, reps + 1), dtype=np.float64)
    if reps and n:
        draws = rng.multinomial(n, np.full(n, 1.0 / n), size=reps)
        out[:, 1:] = draws.T
    return out


def censoring_survival(time: F64, event: npt.NDArray[np.bool_]) -> tuple[F64, F64]:
    """Kaplan-Meier estimate of the censoring survival ``G``: ``(times, G(times))``.

    Ties: events are taken to happen before censorings at the same time.
    """
    times, inverse = np.unique(time, return_inverse=True)
    censored = np.bincount(inverse, weights=(~event).astype(np.float64), minlength=len(times))
    at_time = np.bincount(inverse, minlength=len(times)).astype(np.float64)
    at_risk = at_time[::-1].cumsum()[::-1]
    factor = np.where(at_risk > 0, 1.0 - censored / np.maximum(at_risk, 1.0), 1.0)
    return times.astype(np.float64), np.cumprod(factor).astype(np.float64)


def _g_before(times: F64, surv: F64, t: F64) -> F64:
    """``G(t-)``: survival just before ``t`` (step function from the left)."""
    idx = np.searchsorted(times, t, side="left") - 1
    return np.where(idx >= 0, surv[np.clip(idx, 0, None)], 1.0)


def _g_at(times: F64, surv: F64, t: float) -> float:
    idx = int(np.searchsorted(times, t, side="right")) - 1
    return float(surv[idx]) if idx >= 0 else 1.0


def ipcw_labels(
    time: F64,
    event: npt.NDArray[np.bool_],
    horizon: float,
    censoring: tuple[F64, F64] | None = None,
) -> tuple[npt.NDArray[np.int64], F64]:
    """Binary outcome at ``horizon`` and its IPCW weight (0 where the outcome is unknown).

    Args:
        time: years from index date to event or censoring.
        event: whether ``time`` is an event.
        horizon: years, e.g. 10.
        censoring: ``(times, G)`` from :func:`censoring_survival`; estimated from these
            patients when omitted.
    """
    times, surv = censoring if censoring is not None else censoring_survival(time, event)
    case = event & (time <= horizon)
    control = time > horizon
    g_case = np.maximum(_g_before(times, surv, time), G_FLOOR)
    g_control = max(_g_at(times, surv, horizon), G_FLOOR)
    weight = np.where(case, 1.0 / g_case, np.where(control, 1.0 / g_control, 0.0))
    return case.astype(np.int64), weight


def auroc(y: npt.NDArray[np.int64], p: F64, w: F64, c: F64) -> F64:
    """Weighted AUROC per replicate (ties count one half)."""
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    wc = (w[order])[:, None] * c[order]
    pos = np.add.reduceat(wc * y[order][:, None], starts, axis=0)
    neg = np.add.reduceat(wc * (1 - y[order])[:, None], starts, axis=0)
    below = np.cumsum(neg, axis=0) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=0)
    den = pos.sum(axis=0) * neg.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def brier(y: npt.NDArray[np.int64], p: F64, w: F64, c: F64) -> F64:
    """IPCW Brier score at the horizon per replicate."""
    wc = w[:, None] * c
    total = wc.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(((y - p) ** 2) @ wc / total)


def _bins(p: F64, w: F64, n_bins: int) -> npt.NDArray[np.int64]:
    known = w > 0
    if not known.any():
        return np.zeros(len(p), dtype=np.int64)
    edges = np.quantile(p[known], np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, p, side="right").astype(np.int64)


def calibration_bins(
    y: npt.NDArray[np.int64], p: F64, w: F64, n_bins: int = 10
) -> tuple[F64, F64, F64]:
    """Equal-frequency bins of predicted risk: ``(mean predicted, observed, weight)``."""
    b = _bins(p, w, n_bins)
    weight = np.bincount(b, weights=w, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pred = np.bincount(b, weights=w * p, minlength=n_bins) / weight
        obs = np.bincount(b, weights=w * y, minlength=n_bins) / weight
    return pred, obs, weight


def ece(y: npt.NDArray[np.int64], p: F64, w: F64, c: F64, n_bins: int = 10) -> F64:
    """Expected calibration error (10 equal-frequency bins, weighted) per replicate."""
    b = _bins(p, w, n_bins)
    order = np.argsort(b, kind="mergesort")
    bins_sorted = b[order]
    starts = np.flatnonzero(np.r_[True, bins_sorted[1:] != bins_sorted[:-1]])
    wc = w[order][:, None] * c[order]
    weight = np.add.reduceat(wc, starts, axis=0)
    pred = np.add.reduceat(wc * p[order][:, None], starts, axis=0)
    obs = np.add.reduceat(wc * y[order][:, None], starts, axis=0)
    total = weight.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.abs(pred - obs).sum(axis=0) / total)


def _expit(x: F64) -> F64:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))


def calibration_slope_intercept(
    y: npt.NDArray[np.int64], p: F64, w: F64, c: F64, iterations: int = 40
) -> tuple[F64, F64]:
    """Calibration slope (logistic recalibration on logit p) and intercept (with offset).

    The slope comes from ``logit P(y) = a + b * logit(p)``; the intercept
    (calibration-in-the-large) from ``logit P(y) = a + logit(p)``. Weighted Newton
    iterations, all replicates at once.
    """
    q = np.clip(p, 1e-7, 1 - 1e-7)
    lp = np.log(q / (1 - q))
    lp2 = lp**2
    wc = w[:, None] * c
    yw = wc * y[:, None]
    g0_y, g1_y = yw.sum(0), lp @ yw
    reps = c.shape[1]
    a = np.zeros(reps)
    b = np.ones(reps)
    for _ in range(iterations):
        mu = _expit(a[None, :] + b[None, :] * lp[:, None])
        wmu = wc * mu
        v = wmu * (1 - mu)
        g0, g1 = g0_y - wmu.sum(0), g1_y - lp @ wmu
        h00, h01, h11 = v.sum(0), lp @ v, lp2 @ v
        det = h00 * h11 - h01**2
        with np.errstate(invalid="ignore", divide="ignore"):
            step_a = np.clip((h11 * g0 - h01 * g1) / det, -1.0, 1.0)
            step_b = np.clip((h00 * g1 - h01 * g0) / det, -1.0, 1.0)
        a, b = a + step_a, b + step_b
        if np.nanmax(np.abs(np.r_[step_a, step_b]), initial=0.0) < 1e-9:
            break
    intercept = np.zeros(reps)
    for _ in range(iterations):
        mu = _expit(intercept[None, :] + lp[:, None])
        wmu = wc * mu
        with np.errstate(invalid="ignore", divide="ignore"):
            step = np.clip((g0_y - wmu.sum(0)) / (wmu * (1 - mu)).sum(0), -1.0, 1.0)
        intercept = intercept + step
        if np.nanmax(np.abs(step), initial=0.0) < 1e-9:
            break
    return b, intercept


def km_risk(time: F64, event: npt.NDArray[np.bool_], horizon: float) -> tuple[float, float, float]:
    """Kaplan-Meier risk by ``horizon`` (1 - S(horizon)) with a 95 % CI (Greenwood, log-log).

    Returns NaN for the interval bounds when it cannot be estimated (no one at risk).
    """
    return intervals.km_risk(time, event, horizon, z=1.96)


def km_decile_calibration(
    time: F64, event: npt.NDArray[np.bool_], p: F64, horizon: float, n_bins: int = 10
) -> list[dict[str, float]]:
    """Calibration by decile of predicted risk, observed risk by Kaplan-Meier.

    Deciles over every patient (censored ones included); per decile the number of
    patients and events by the horizon, the mean predicted risk, and the Kaplan-Meier
    observed risk with its 95 % CI.
    """
    edges = np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1])
    bins = np.searchsorted(edges, p, side="right")
    rows = []
    for k in range(n_bins):
        sel = bins == k
        if not sel.any():
            continue
        observed, low, high = km_risk(time[sel], event[sel], horizon)
        rows.append(
            {
                "decile": float(k + 1),
                "n": float(sel.sum()),
                "events": float((event[sel] & (time[sel] <= horizon)).sum()),
                "predicted": float(p[sel].mean()),
                "observed": observed,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return rows


def observed_expected(
    time: F64, event: npt.NDArray[np.bool_], p: F64, horizon: float, c: F64
) -> F64:
    """Observed/expected risk per replicate: Kaplan-Meier risk by ``horizon`` / mean ``p``.

    ``c`` are the bootstrap weights (:func:`bootstrap_weights`), used as case weights
    in both the Kaplan-Meier estimate and the mean.
    """
    order = np.argsort(time, kind="mergesort")
    t, e, cw = time[order], event[order], c[order]
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    deaths = np.add.reduceat(cw * e[:, None], starts, axis=0)
    at_time = np.add.reduceat(cw, starts, axis=0)
    at_risk = at_time[::-1].cumsum(axis=0)[::-1]
    upto = t[starts] <= horizon
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(at_risk[upto] > 0, 1.0 - deaths[upto] / at_risk[upto], 1.0)
        observed = 1.0 - np.prod(factor, axis=0)
        expected = (p @ c) / c.sum(0)
        return np.asarray(observed / expected)


def net_benefit(y: npt.NDArray[np.int64], p: F64, w: F64, thresholds: F64) -> tuple[F64, F64]:
    """Decision-curve net benefit of treating ``p >= t``, and of treating everyone."""
    total = w.sum()
    model = np.empty(len(thresholds))
    treat_all = np.empty(len(thresholds))
    prevalence = float((w * y).sum() / total) if total > 0 else float("nan")
    for k, t in enumerate(thresholds):
        treat = p >= t
        tp = float((w * y * treat).sum()) / total
        fp = float((w * (1 - y) * treat).sum()) / total
        model[k] = tp - fp * t / (1 - t)
        treat_all[k] = prevalence - (1 - prevalence) * t / (1 - t)
    return model, treat_all


def concordance(
    time: F64,
    event: npt.NDArray[np.bool_],
    risk: F64,
    horizon: float,
    c: F64,
    censoring: tuple[F64, F64] | None = None,
) -> F64:
    """Harrell's C (``censoring=None``) or Uno's C (IPCW), truncated at ``horizon``.

    A pair is comparable when patient i has an event at ``T_i <= horizon`` and patient
    j is still event-free after ``T_i``; it is concordant when i's risk is higher
    (ties in risk count one half). O(n log n) with a Fenwick tree over risk ranks.
    """
    n, reps = c.shape
    _, rank = np.unique(risk, return_inverse=True)
    rank = rank + 1
    size = int(rank.max()) if n else 0
    tree = np.zeros((size + 1, reps))
    if censoring is not None:
        times, surv = censoring
        a_weight = 1.0 / np.maximum(_g_before(times, surv, time), G_FLOOR) ** 2
    else:
        a_weight = np.ones(n)
    order = np.argsort(-time, kind="mergesort")
    num = np.zeros(reps)
    den = np.zeros(reps)
    inserted = np.zeros(reps)

    def query(k: int) -> F64:
        acc = np.zeros(reps)
        while k > 0:
            acc += tree[k]
            k -= k & -k
        return acc

    i = 0
    while i < n:
        j = i
        t = time[order[i]]
        while j < n and time[order[j]] == t:
            j += 1
        group = order[i:j]
        if t <= horizon:
            for idx in group:
                if not event[idx] or not c[idx].any():
                    continue
                r = int(rank[idx])
                less = query(r - 1)
                equal = query(r) - less
                weight = a_weight[idx] * c[idx]
                num += weight * (less + 0.5 * equal)
                den += weight * inserted
        for idx in group:
            if not c[idx].any():
                continue
            k = int(rank[idx])
            while k <= size:
                tree[k] += c[idx]
                k += k & -k
            inserted += c[idx]
        i = j
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)
