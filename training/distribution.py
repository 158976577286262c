"""The training distribution an artifact records for drift monitoring.

Both trainers store ``training_distribution`` in the artifact's typed details: per
monitored value (an NCD input feature; a chest X-ray image statistic ``image:*`` /
``source:*`` or calibrated score ``score:<label>``), the decile cut points over the
reference rows and the share of rows in each bin. Serving counts which bin each
answer's value falls in and computes the population stability index against these
shares (:mod:`serving.monitor.drift`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.details import FeatureBins

__all__ = ["rows_to_matrix", "training_distribution"]


def training_distribution(
    x: np.ndarray, names: list[str], bins: int = 10
) -> dict[str, FeatureBins]:
    """Per column of ``x``, the decile cut points and the share of rows in each bin.

    Serving compares live values with this (population stability index,
    :mod:`serving.monitor.drift`); stored as the details' ``training_distribution``. A
    column with few distinct values (e.g. sex) gets fewer bins; missing values (NaN)
    are left out, and a column without any value is not recorded. Bin ``i`` holds
    ``edges[i-1] <= x < edges[i]``.
    """
    out: dict[str, FeatureBins] = {}
    for j, name in enumerate(names):
        values = x[:, j][np.isfinite(x[:, j])].astype(np.float64)
        if len(values) == 0:
            continue
        cuts = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
        edges = [float(c) for c in np.unique(cuts) if c > values.min()]
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        out[name] = FeatureBins(
            edges=edges, proportions=[float(c) for c in counts / len(values)], n=len(values)
        )
    return out


def rows_to_matrix(rows: Sequence[Mapping[str, float]], names: list[str]) -> np.ndarray:
    """``[len(rows), len(names)]`` float64, NaN where a row has no such value."""
    out = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            value = row.get(name)
            if value is not None:
                out[i, j] = value
    return out
