"""What chest X-ray drift monitoring watches: image statistics and calibrated scores.

One function for training and serving (train/serve skew would be drift by itself):
:func:`image_statistics` reads the preprocessed model input (``[1, S, S]`` in [0, 1])
and the header facts of the decoded original. Training records their distribution over
the training split, and the calibrated scores' over the validation split, in
``CxrDetails.training_distribution`` (:mod:`training.distribution`); serving counts the
bin of each read's values and computes the population stability index when
``/metrics`` is scraped (:mod:`serving.monitor.alerts`).

Names (bounded, the ``feature`` label of the drift metrics):

- ``image:mean``, ``image:std``, ``image:p05``, ``image:p95``: of the model input;
- ``image:dark``, ``image:bright``: share of model-input pixels below 0.05 / above 0.95;
- ``source:aspect`` (rows / columns), ``source:long_side`` (pixels) of the original;
  ``source:spacing_mm`` (mean pixel spacing) and ``source:bits`` (BitsStored) where the
  header gives them (DICOM);
- ``score:<label>``: the calibrated probability of each label.

The statistics are taken on a regular grid of at most :data:`GRID` x :data:`GRID`
pixels, so their cost does not grow with the input size (about 0.05 ms at 224 px).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.cxr_preprocess.image import DecodedImage

__all__ = ["GRID", "IMAGE_STATISTICS", "image_statistics", "score_name", "score_values"]

GRID = 64
DARK, BRIGHT = 0.05, 0.95
IMAGE_STATISTICS = (
    "image:mean",
    "image:std",
    "image:p05",
    "image:p95",
    "image:dark",
    "image:bright",
    "source:aspect",
    "source:long_side",
    "source:spacing_mm",
    "source:bits",
)


def image_statistics(model_input: np.ndarray, decoded: DecodedImage | None) -> dict[str, float]:
    """The image statistics of one preprocessed image (``[1, S, S]`` or ``[S, S]``).

    ``decoded``: the decoded original, for its size, pixel spacing and bits stored
    (None: the ``source:*`` values are left out).
    """
    plane = model_input.reshape(model_input.shape[-2:])
    step = max(1, -(-max(plane.shape) // GRID))
    grid = plane[::step, ::step].flatten()  # a copy: the partition below sorts in place
    n = grid.size
    lo, hi = int(0.05 * (n - 1)), int(0.95 * (n - 1))
    grid.partition((lo, hi))
    out = {
        "image:mean": float(grid.mean(dtype=np.float64)),
        "image:std": float(grid.std(dtype=np.float64)),
        "image:p05": float(grid[lo]),
        "image:p95": float(grid[hi]),
        "image:dark": np.count_nonzero(grid < DARK) / n,
        "image:bright": np.count_nonzero(grid > BRIGHT) / n,
    }
    if decoded is not None and decoded.rows > 0 and decoded.columns > 0:
        out["source:aspect"] = decoded.rows / decoded.columns
        out["source:long_side"] = float(max(decoded.rows, decoded.columns))
        if decoded.pixel_spacing is not None:
            out["source:spacing_mm"] = float(sum(decoded.pixel_spacing) / 2)
        if decoded.bits_stored is not None:
            out["source:bits"] = float(decoded.bits_stored)
    return out


def score_name(label: str) -> str:
    """The drift name of a label's calibrated score."""
    return f"score:{label}"


def score_values(labels: Sequence[str], probabilities: Sequence[float]) -> dict[str, float]:
    """``score:<label>`` -> calibrated probability, for one read."""
    return {score_name(label): float(p) for label, p in zip(labels, probabilities, strict=True)}
