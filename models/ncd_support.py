"""Where an NCD model has seen patients: the training range of each input.

Training records, per input, the range the training rows covered (the 0.1st to 99.9th
percentile of a measurement: about 1 in 500 patients like the training ones falls
outside, and one stray training value cannot widen it; the smallest to largest value of
a code or flag such as sex or smoking) and how often it was missing, in
``metadata.ncd.input_support``. Serving asks :meth:`InputSupport.outside` before
it shows the model's estimate: a patient with a measured value outside that range is
unlike the patients the model learned from, and its estimate there is an extrapolation
no validation covers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from models.metadata import FeatureSpec

__all__ = ["QUANTILES", "FeatureSupport", "InputSupport", "Outside"]

QUANTILES: Final = (0.001, 0.999)
"""The percentiles that bound a measurement's training range."""


class FeatureSupport(BaseModel):
    """One input's training range and missing rate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: float
    high: float
    missing_rate: float = Field(ge=0.0, le=1.0)


class Outside(BaseModel):
    """A measured value outside its input's training range."""

    model_config = ConfigDict(frozen=True)

    feature: str
    value: float
    low: float
    high: float
    side: Literal["above", "below"]


class InputSupport(BaseModel):
    """The training range of every input of one model (``NcdDetails.input_support``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantiles: tuple[float, float] = QUANTILES
    features: dict[str, FeatureSupport]

    @classmethod
    def of_rows(cls, x: npt.NDArray[np.floating], specs: list[FeatureSpec]) -> InputSupport:
        """The support of training rows ``x`` (``[N, F]`` in ``specs`` order, NaN missing).

        A 0/1 or coded input (unit ``"1"``) gets its smallest and largest value, so a
        rare but present category is inside; a measurement gets :data:`QUANTILES`.
        """
        out: dict[str, FeatureSupport] = {}
        for j, spec in enumerate(specs):
            column = np.asarray(x[:, j], dtype=np.float64)
            known = column[~np.isnan(column)]
            if known.size == 0:
                continue  # never measured: no range to hold a patient to
            if spec.unit == "1":
                low, high = float(known.min()), float(known.max())
            else:
                low, high = (float(v) for v in np.quantile(known, QUANTILES))
            out[spec.name] = FeatureSupport(
                low=low, high=high, missing_rate=1.0 - known.size / column.size
            )
        return cls(quantiles=QUANTILES, features=out)

    def outside(self, encoded: Mapping[str, float]) -> list[Outside]:
        """The measured values (model encoding) outside their training range."""
        found: list[Outside] = []
        for name, value in encoded.items():
            support = self.features.get(name)
            if support is None or math.isnan(value):
                continue
            if value > support.high or value < support.low:
                side: Literal["above", "below"] = "above" if value > support.high else "below"
                found.append(
                    Outside(
                        feature=name, value=value, low=support.low, high=support.high, side=side
                    )
                )
        return found
