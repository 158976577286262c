"""Input drift: population stability index against the distribution in the artifact.

At training time the artifact records, per feature (an NCD input; a chest X-ray image
statistic or calibrated score, :mod:`models.cxr_drift`), the decile cut points of the
reference rows and the share of those rows in each bin
(``metadata.ncd.training_distribution`` / ``metadata.cxr.training_distribution``,
:class:`models.details.FeatureBins`, written by
:func:`training.distribution.training_distribution`). On the request path a served
answer only counts which bin each feature fell in (a counter per service, feature and
bin index: bounded labels, no values); the PSI is computed when ``/metrics`` is scraped,
from the counts of a rolling window (:class:`Window`).

PSI = sum over bins of (observed - expected) * ln(observed / expected); by convention
below 0.1 is stable, 0.1-0.25 a moderate shift, above 0.25 a major one.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence

from models.details import FeatureBins

__all__ = ["FeatureBins", "Window", "bin_of", "psi"]

_FLOOR = 1e-4  # a bin empty on one side would make the log infinite


def bin_of(value: float, bins: FeatureBins) -> int:
    """The index of the bin ``value`` falls in (the training rule: x >= edge goes up)."""
    return bisect_right(bins.edges, value)


def psi(expected: Sequence[float], observed: Sequence[float]) -> float | None:
    """PSI of ``observed`` bin counts against ``expected`` shares (None: no counts)."""
    total = sum(observed)
    if total <= 0:
        return None
    value = 0.0
    for e, count in zip(expected, observed, strict=True):
        e = max(e, _FLOOR)
        o = max(count / total, _FLOOR)
        value += (o - e) * math.log(o / e)
    return value


class Window:
    """Counts over roughly the last ``seconds``, from cumulative counters.

    Each call gives the current totals; the answer is the difference from the newest
    earlier totals at least ``seconds`` old, or the totals themselves (counted since
    start) until such a snapshot exists or after a counter went back (a restart).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._snapshots: deque[tuple[float, dict[tuple[str, ...], float]]] = deque()

    def delta(
        self, now: float, totals: dict[tuple[str, ...], float]
    ) -> dict[tuple[str, ...], float]:
        """``totals`` minus the window's baseline."""
        snaps = self._snapshots
        if snaps and any(totals.get(k, 0.0) < v for k, v in snaps[-1][1].items()):
            snaps.clear()  # counters were reset
        snaps.append((now, dict(totals)))
        while len(snaps) >= 2 and now - snaps[1][0] >= self.seconds:
            snaps.popleft()
        base_time, base = snaps[0]
        if now - base_time < self.seconds:
            return dict(totals)
        return {k: v - base.get(k, 0.0) for k, v in totals.items()}
