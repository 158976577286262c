"""What a missing optional input becomes inside a fitted NCD model, measured, not assumed.

An optional feature may be missing at serving (passed as NaN). What the model then does
depends on the model and on the training data:

* the logistic baseline imputes the training median (``SimpleImputer``): a missing
  value is scored exactly as that value;
* HistGradientBoosting routes NaN itself. Where the feature was missing in training it
  learned a route for "unknown"; where it never was, scikit-learn sends NaN down the
  branch most training rows took at each split. For a 0/1 feature that is exactly the
  commoner answer: an unknown ``bp_treated`` never missing in training is scored as
  *untreated*.

:func:`missing_inputs` finds out which by scoring training rows with the feature set to
NaN and to each candidate value (0 and 1 for a 0/1 feature, else the training median):
the candidate that gives the same probability on every row is what "missing" means to
the model. The result goes in the artifact's metadata (``NcdDetails.missing_inputs``), so
the model card and every served card can say it plainly.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from models.details import MissingInput
from models.metadata import FeatureSpec

__all__ = ["MAX_ROWS", "missing_inputs", "with_missing_rows"]

#: Rows scored per feature and candidate (enough to see every split in small trees).
MAX_ROWS: Final = 2000
_SAME: Final = 1e-9


def _probabilities(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return np.asarray(model.predict_proba(x), dtype=np.float64)[:, 1]


def missing_inputs(
    model: Any, x: npt.NDArray[np.float32], features: list[FeatureSpec]
) -> dict[str, MissingInput]:
    """For each optional feature: how often it was missing in ``x`` and what the model
    scores a missing value as.

    Args:
        model: The fitted estimator (``predict_proba``).
        x: The rows it was fitted on, float32 ``[N, F]`` in ``features`` order.
        features: The input contract (required features are never missing at serving).

    Returns:
        Per optional input, its :class:`~models.details.MissingInput`; ``scored_as``
        is None when no single value gives the model's answer for a missing input (a
        learned route, or trees splitting a continuous feature).
    """
    rows = x[: min(len(x), MAX_ROWS)]
    out: dict[str, MissingInput] = {}
    for j, spec in enumerate(features):
        if spec.required:
            continue
        column = x[:, j]
        present = column[~np.isnan(column)]
        binary = spec.minimum == 0.0 and spec.maximum == 1.0 and spec.unit == "1"
        if binary:
            candidates = [0.0, 1.0]
        elif len(present):
            candidates = [float(np.median(present))]
        else:
            candidates = []
        probe = rows.copy()
        probe[:, j] = np.nan
        p_missing = _probabilities(model, probe)
        scored_as: float | None = None
        for value in candidates:
            probe[:, j] = value
            if np.max(np.abs(_probabilities(model, probe) - p_missing)) <= _SAME:
                scored_as = value
                break
        out[spec.name] = MissingInput(
            missing_in_training=float(np.isnan(column).mean()), scored_as=scored_as
        )
    return out


def with_missing_rows(
    x: npt.NDArray[np.float32], features: list[FeatureSpec], per_feature: int = 500
) -> npt.NDArray[np.float32]:
    """``x`` plus, for each optional feature, ``per_feature`` of its rows with that
    feature missing: the ONNX parity check then proves the exported model treats a
    missing input as the fitted one does, even when the training data had none.
    """
    extra = []
    for j, spec in enumerate(features):
        if spec.required:
            continue
        block = x[:per_feature].copy()
        block[:, j] = np.nan
        extra.append(block)
    return np.concatenate([x, *extra]) if extra else x
