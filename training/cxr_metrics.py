"""Metrics for the chest X-ray model: AUROC with bootstrap CI, operating points,
Platt calibration, calibration error and localisation of the activation map.

Plain numpy (plus scikit-learn's AUROC), shared by training (operating points and
calibration on validation data) and ``tonle evaluate`` (held-out reports).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import beta, rankdata
from sklearn.metrics import roc_auc_score

from models.cxr_predictor import upsample_cam
from models.cxr_preprocess import area_resize

__all__ = [
    "AurocCI",
    "Localisation",
    "OperatingPointChoice",
    "auroc_ci",
    "calibration_bins",
    "centre_map",
    "choose_threshold",
    "expected_calibration_error",
    "fit_platt",
    "known",
    "localisation",
    "prior_map",
    "proportion_ci",
    "sens_spec",
    "sensitivity_lower_bound",
]

F64 = npt.NDArray[np.float64]


def known(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[F64, F64]:
    """The cases whose truth is known: ``y`` NaN (the data set does not say) dropped.

    Every metric here scores only these, so an unknown label is never read as absent.
    """
    yy = np.asarray(y, dtype=np.float64).reshape(-1)
    pp = np.asarray(p, dtype=np.float64).reshape(-1)
    keep = ~np.isnan(yy)
    return yy[keep], pp[keep]


class AurocCI(BaseModel):
    """AUROC with a percentile bootstrap 95 % CI; ``value`` is None with one class only."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_positive: int


def auroc_ci(y: npt.ArrayLike, p: npt.ArrayLike, reps: int = 1000, seed: int = 0) -> AurocCI:
    """AUROC and a 95 % bootstrap CI (cases resampled with replacement).

    Args:
        y: 0/1 truth; NaN (unknown) cases are left out.
        p: scores (any monotone scale).
        reps: bootstrap replicates.
        seed: RNG seed for the replicates.
    """
    truth, pp = known(y, p)
    yy = truth.astype(np.int64)
    n, pos = int(yy.size), int(yy.sum())
    if pos == 0 or pos == n:
        return AurocCI(value=None, ci_low=None, ci_high=None, n=n, n_positive=pos)
    value = float(roc_auc_score(yy, pp))
    if reps <= 0:
        return AurocCI(value=value, ci_low=None, ci_high=None, n=n, n_positive=pos)
    idx = np.random.default_rng(seed).integers(0, n, (reps, n))
    ys, ps = yy[idx], pp[idx]
    ranks = rankdata(ps, axis=1)  # ties get their average rank, as AUROC counts them 1/2
    n1 = ys.sum(axis=1)
    n0 = n - n1
    valid = (n1 > 0) & (n0 > 0)
    u = (ranks * ys).sum(axis=1) - n1 * (n1 + 1) / 2
    samples = u[valid] / (n1[valid] * n0[valid])
    low, high = np.percentile(samples, [2.5, 97.5]) if samples.size else (value, value)
    return AurocCI(value=value, ci_low=float(low), ci_high=float(high), n=n, n_positive=pos)


def sens_spec(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of ``p >= threshold`` over the known cases (NaN where
    undefined)."""
    truth, pp = known(y, p)
    yy = truth > 0
    flag = pp >= threshold
    sens = float(flag[yy].mean()) if yy.any() else float("nan")
    spec = float((~flag[~yy]).mean()) if (~yy).any() else float("nan")
    return sens, spec


def sensitivity_lower_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound of a proportion ``k / n`` at ``confidence``."""
    if n <= 0 or k <= 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, k, n - k + 1))


def proportion_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided CI of ``k / n``; (nan, nan) when ``n == 0``."""
    if n <= 0:
        return float("nan"), float("nan")
    tail = 1.0 - (1.0 - level) / 2
    low = sensitivity_lower_bound(k, n, tail)
    high = 1.0 - sensitivity_lower_bound(n - k, n, tail)
    return low, high


class OperatingPointChoice(BaseModel):
    """A threshold and what it achieved on the data it was chosen on."""

    threshold: float
    sensitivity: float
    specificity: float
    rule: str


def choose_threshold(
    y: npt.ArrayLike, p: npt.ArrayLike, min_sensitivity: float, confidence: float | None = None
) -> OperatingPointChoice:
    """A threshold reaching ``min_sensitivity`` with the best specificity, with margin.

    Without ``confidence`` the k-th highest positive score (k = ceil(target x
    positives)) is the highest threshold meeting the target on these data. With it, k
    is the smallest count whose one-sided Clopper-Pearson lower bound at
    ``confidence`` reaches the target (all positives when none does): the validation
    sensitivity then exceeds the target by the sampling margin of its positives, so
    new data are likely to meet it too. The threshold returned sits halfway (in logit
    space) between that score and the next lower one, so the validation sensitivity
    and specificity are unchanged but new cases near the boundary are not lost to a
    razor-edge cut. Cases with unknown truth (NaN) are left out.

    Raises:
        ValueError: no known positive case (there is nothing to choose a threshold on;
            the caller records that the label has no operating point).
    """
    truth, pp = known(y, p)
    yy = truth > 0
    if not yy.any():
        raise ValueError("no known positive case: no threshold can be chosen")
    positives = np.sort(pp[yy])[::-1]
    n = positives.size
    if confidence is None:
        k = max(1, int(np.ceil(min_sensitivity * n)))  # positives that must be flagged
        rule = f"sensitivity >= {min_sensitivity:.2f} with best specificity"
    else:
        k = next(
            (j for j in range(1, n + 1)
             if sensitivity_lower_bound(j, n, confidence) >= min_sensitivity),
            n,
        )  # fmt: skip
        rule = (
            f"one-sided {confidence:.0%} lower bound of sensitivity >= {min_sensitivity:.2f} "
            "(else every positive) with best specificity"
        )
    cut = float(positives[k - 1])
    lower = pp[pp < cut]
    threshold = cut
    if lower.size:
        eps = 1e-12
        a, b = np.clip([cut, float(lower.max())], eps, 1 - eps)
        mid = (np.log(a / (1 - a)) + np.log(b / (1 - b))) / 2
        threshold = float(1 / (1 + np.exp(-mid)))
    sens, spec = sens_spec(yy, pp, threshold)
    return OperatingPointChoice(
        threshold=threshold,
        sensitivity=sens,
        specificity=spec,
        rule=f"{rule}; threshold midway (logit) to the next lower score",
    )


def fit_platt(logits: npt.ArrayLike, y: npt.ArrayLike) -> dict[str, float]:
    """Platt scaling of one label's logits: ``p = sigmoid(scale * logit + offset)``.

    ``scale`` is an inverse temperature and ``offset`` a shift (the class-weighted
    training loss moves rare labels' logits). Fitted by maximum likelihood against
    Platt's (1999) smoothed targets, ``(n+ + 1) / (n+ + 2)`` for positives and
    ``1 / (n- + 2)`` for negatives: on (nearly) separable validation data a plain fit
    drives the scale to infinity and every probability to 0 or 1, which makes the
    operating points razor-edged. Cases with unknown truth (NaN) are left out; falls
    back to the identity with fewer than both classes known.
    """
    truth, xx = known(y, logits)
    yy = truth.astype(np.int64)
    if yy.size == 0 or yy.min() == yy.max():
        return {"scale": 1.0, "offset": 0.0}
    n_pos = int(yy.sum())
    n_neg = yy.size - n_pos
    target = np.where(yy > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def nll(v: F64) -> tuple[float, F64]:
        z = v[0] * xx + v[1]
        residual = expit(z) - target
        loss = float(np.sum(np.logaddexp(0.0, z) - target * z))
        return loss, np.array([np.sum(residual * xx), np.sum(residual)])

    result = minimize(nll, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return {"scale": float(result.x[0]), "offset": float(result.x[1])}


def calibration_bins(
    y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10
) -> list[tuple[float, float, int]]:
    """Equal-width bins: (mean predicted, observed rate, count) for non-empty bins, over
    the cases with known truth."""
    yy, pp = known(y, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(pp, edges[1:-1]), 0, n_bins - 1)
    out: list[tuple[float, float, int]] = []
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            out.append((float(pp[sel].mean()), float(yy[sel].mean()), int(sel.sum())))
    return out


def expected_calibration_error(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> float:
    """Count-weighted mean |observed - predicted| over equal-width bins."""
    bins = calibration_bins(y, p, n_bins)
    total = sum(count for _, _, count in bins)
    return float(sum(abs(obs - pred) * count for pred, obs, count in bins) / max(total, 1))


class Localisation(BaseModel):
    """How well one kind of map points at the findings' masks."""

    n: int
    peak_in_mask: float | None  # fraction of positive cases whose map peak is inside the mask
    mean_iou: float | None  # mean IoU of the map thresholded at ``iou_level`` x its max vs mask


def localisation(
    cams: npt.NDArray[np.float32], masks: list[npt.NDArray[np.bool_]], iou_level: float = 0.5
) -> Localisation:
    """Peak-in-mask rate and mean IoU for positive cases.

    Each map is upsampled (bilinear, as the served heatmap) to its mask's resolution
    before the peak is taken. The mask must cover the same field of view as the model
    input (``to_model_input`` resizes the whole image, no crop, so any resolution works).

    Args:
        cams: one raw map ``[h, w]`` per case.
        masks: the finding mask of each case (any resolution); empty masks are skipped.
        iou_level: the map is thresholded at this fraction of its range above its minimum.
    """
    hits: list[bool] = []
    ious: list[float] = []
    for cam, mask in zip(cams, masks, strict=True):
        if not mask.any():
            continue
        up = upsample_cam(cam, mask.shape[0], mask.shape[1])
        peak = np.unravel_index(int(np.argmax(up)), up.shape)
        hits.append(bool(mask[peak]))
        low, high = float(up.min()), float(up.max())
        hot = up >= low + iou_level * (high - low) if high > low else np.zeros_like(mask)
        union = np.logical_or(hot, mask).sum()
        ious.append(float(np.logical_and(hot, mask).sum() / union) if union else 0.0)
    if not hits:
        return Localisation(n=0, peak_in_mask=None, mean_iou=None)
    return Localisation(
        n=len(hits), peak_in_mask=float(np.mean(hits)), mean_iou=float(np.mean(ious))
    )


def centre_map() -> npt.NDArray[np.float32]:
    """A trivial map whose peak is the image centre (a baseline for :func:`localisation`)."""
    out = np.zeros((3, 3), dtype=np.float32)
    out[1, 1] = 1.0
    return out


def prior_map(masks: list[npt.NDArray[np.bool_]], side: int = 32) -> npt.NDArray[np.float32]:
    """The fraction of ``masks`` covering each point: one fixed map for every case.

    Its peak is where findings are most often; used as a baseline. Fitted on the cases
    it is scored on, so it flatters the baseline (an upper bound for any fixed map).
    """
    grids = [area_resize(m.astype(np.float32), (side, side)) for m in masks if m.any()]
    if not grids:
        return np.zeros((side, side), dtype=np.float32)
    return np.asarray(np.mean(grids, axis=0), dtype=np.float32)
