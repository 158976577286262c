"""Confidence intervals shared by training (validation, calibration studies) and
serving (realised accuracy after go-live), so both report the same interval."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["Z95", "km_risk", "wilson"]

Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95 % interval."""


def wilson(
    p: npt.ArrayLike, n: npt.ArrayLike, z: float = Z95
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Wilson score interval for proportions ``p`` out of (effective) sizes ``n``.

    Returns:
        ``(low, high)``, clipped to 0-1; NaN where ``n`` is 0.
    """
    p = np.asarray(p, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z2n = z * z / n
        centre = (p + z2n / 2) / (1 + z2n)
        half = z * np.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
        low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
        high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high


def km_risk(
    time: npt.ArrayLike, event: npt.ArrayLike, horizon: float, z: float = Z95
) -> tuple[float, float, float]:
    """Kaplan-Meier risk by ``horizon`` (1 - S(horizon)) from follow-up ``time`` and
    ``event`` (True: the event, False: censored then), with a Greenwood 95 % interval on
    the log(-log) scale.

    Returns:
        ``(risk, low, high)``; NaN bounds where the interval cannot be estimated (the
        curve at 1 or 0). Whether anyone was followed to ``horizon`` is the caller's to
        judge.
    """
    times, inverse = np.unique(np.asarray(time, dtype=np.float64), return_inverse=True)
    died = np.asarray(event, dtype=np.float64)
    deaths = np.bincount(inverse, weights=died, minlength=len(times))
    at_time = np.bincount(inverse, minlength=len(times)).astype(np.float64)
    at_risk = at_time[::-1].cumsum()[::-1]
    upto = times <= horizon
    d, n = deaths[upto], at_risk[upto]
    surv = float(np.prod(1.0 - d / n)) if len(n) else 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        var = float(np.sum(d / (n * (n - d)))) if len(n) else 0.0
    if not 0.0 < surv < 1.0 or not np.isfinite(var):
        return 1.0 - surv, float("nan"), float("nan")
    half = z * np.sqrt(var) / abs(np.log(surv))
    low_s, high_s = surv ** np.exp(half), surv ** np.exp(-half)
    return 1.0 - surv, float(1.0 - high_s), float(1.0 - low_s)
