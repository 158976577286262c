"""A chest X-ray CAD calibration study: the tables overall and per stratum.

Verification bias. When only some people have a reference result (a common design:
everyone above a score gets the test, a random sample below it), estimates counted over
the verified people alone are biased: sensitivity is usually too high and specificity
too low. They are corrected by inverse-probability weighting (each verified person
counts ``1 / P(verified)`` times) when the study says how it sampled:

* ``--sampling-fraction 0:0.1,0.4:1``: score bands by their lower bound and the share
  of each band sent for the reference test (here: 10 % of scores in ``[0, 0.4)``,
  everyone from 0.4 up); weight = 1 / fraction; or
* a ``sampling_weight`` column: each verified person's own ``1 / P(verified)``.

Without either, a study with unverified people is computed over the verified ones
and its report says plainly that the estimates are biased; it says so too when the
share tested in a band is far from the fraction given (the design was not followed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from training.calibrate.study import Study, StudyError
from training.calibrate.table import ThresholdTable, threshold_table

__all__ = [
    "Calibration",
    "Estimator",
    "SamplingBand",
    "Stratum",
    "calibrate",
    "default_thresholds",
    "parse_sampling_fractions",
    "parse_thresholds",
]

Estimator = Literal["complete", "ipw-fractions", "ipw-weights", "verified-only"]
AGE_CUT = 55.0


def default_thresholds() -> np.ndarray:
    """0.00, 0.01, ..., 1.00."""
    return np.round(np.arange(101) / 100.0, 2)


def parse_thresholds(text: str) -> np.ndarray:
    """Parse ``--thresholds 0.1,0.2,...``: numbers in [0, 1], sorted, no repeats.

    Raises:
        ValueError: an item is not a number in [0, 1] or repeats.
    """
    values: list[float] = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"threshold {item.strip()[:20]!r} is not a number") from None
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"threshold {item.strip()[:20]!r} is outside 0 to 1")
        values.append(value)
    if len(set(values)) != len(values):
        raise ValueError("a threshold is given twice")
    return np.array(sorted(values))


@dataclass(frozen=True)
class SamplingBand:
    """Scores from ``low`` (inclusive) up to the next band's ``low`` sampled at ``fraction``."""

    low: float
    fraction: float


def parse_sampling_fractions(text: str) -> list[SamplingBand]:
    """Parse ``--sampling-fraction 0:0.1,0.4:1`` (``LOWER:FRACTION`` items).

    Raises:
        ValueError: malformed items, lower bounds not rising from 0, or a fraction
            outside (0, 1].
    """
    bands: list[SamplingBand] = []
    for item in text.split(","):
        low_text, sep, fraction_text = item.partition(":")
        try:
            if not sep:
                raise ValueError
            band = SamplingBand(float(low_text), float(fraction_text))
        except ValueError:
            raise ValueError(
                f"sampling band {item.strip()[:30]!r} is not LOWER:FRACTION, e.g. 0.4:1"
            ) from None
        if not (math.isfinite(band.fraction) and 0.0 < band.fraction <= 1.0):
            raise ValueError(f"sampling fraction {band.fraction:g} is outside (0, 1]")
        if not (math.isfinite(band.low) and 0.0 <= band.low <= 1.0):
            raise ValueError(f"band lower bound {band.low:g} is outside 0 to 1")
        if bands and band.low <= bands[-1].low:
            raise ValueError("band lower bounds must rise (e.g. 0:0.1,0.4:1)")
        bands.append(band)
    if bands[0].low != 0.0:
        raise ValueError("the first sampling band must start at 0")
    return bands


@dataclass(frozen=True)
class Stratum:
    """One subgroup's table."""

    stratum: str
    group: str
    table: ThresholdTable


@dataclass(frozen=True)
class Calibration:
    """Everything a calibration study reports.

    Attributes:
        study: the study.
        overall: the table over everyone.
        strata: the same per subgroup.
        estimator: how the rates were estimated (see module docstring).
        bias: a plain statement when the estimates are biased, else None.
        bands: the sampling bands with the observed share verified in each.
        has_costs: whether cost columns are filled.
    """

    study: Study
    overall: ThresholdTable
    strata: list[Stratum]
    estimator: Estimator
    bias: str | None
    bands: list[tuple[SamplingBand, int, int]]
    has_costs: bool


def _weights(
    study: Study, bands: list[SamplingBand] | None
) -> tuple[np.ndarray | None, Estimator, list[tuple[SamplingBand, int, int]]]:
    verified = study.verified
    if bands is not None and study.sampling_weight is not None:
        raise StudyError("give --sampling-fraction or a sampling_weight column, not both")
    if study.sampling_weight is not None:
        return np.where(verified, study.sampling_weight, 0.0), "ipw-weights", []
    if bands is None:
        return None, ("complete" if verified.all() else "verified-only"), []
    lows = np.array([band.low for band in bands])
    which = np.searchsorted(lows, study.score, "right") - 1
    weights = np.zeros(study.screened)
    seen: list[tuple[SamplingBand, int, int]] = []
    for index, band in enumerate(bands):
        in_band = which == index
        people, tested = int(in_band.sum()), int((in_band & verified).sum())
        if people and not tested:
            raise StudyError(
                f"sampling band from {band.low:g} has {people} people and none with a "
                "reference result: its rates cannot be estimated"
            )
        weights[in_band & verified] = 1.0 / band.fraction
        seen.append((band, people, tested))
    return weights, "ipw-fractions", seen


def _bias(
    study: Study, estimator: Estimator, bands: list[tuple[SamplingBand, int, int]]
) -> str | None:
    missing = int((~study.verified).sum())
    if estimator == "verified-only":
        return (
            f"{missing} of {study.screened} people screened have no reference result and the "
            "study gives no sampling fractions or weights: sensitivity, specificity, PPV and "
            "NPV are counted over the people tested only and are BIASED (verification bias; "
            "usually sensitivity too high and specificity too low). Give --sampling-fraction "
            "or a sampling_weight column to correct them."
        )
    off = [
        f"scores from {band.low:g}: {band.fraction:g} given, {tested / people:.3f} tested"
        for band, people, tested in bands
        if people and abs(tested / people - band.fraction) > 0.1 * band.fraction + 0.02
    ]
    if off:
        return (
            "The study did not follow the sampling fractions given ("
            + "; ".join(off)
            + "): the weights use the fractions given, so the corrected estimates may be "
            "BIASED. Check the design, or give each person's sampling_weight."
        )
    return None


def _costs(study: Study, cost_per_test: float | None) -> np.ndarray | None:
    if study.test_cost is None:
        return None if cost_per_test is None else np.full(study.screened, cost_per_test)
    costs = study.test_cost.copy()
    missing = np.isnan(costs)
    if missing.any():
        if cost_per_test is None:
            line = int(study.lines[np.argmax(missing)])
            raise StudyError("empty and no --cost-per-test to use instead", line, "test_cost")
        costs[missing] = cost_per_test
    return costs


def _groups(study: Study) -> list[tuple[str, str, np.ndarray]]:
    groups = [
        ("age", f">={AGE_CUT:g}", study.age >= AGE_CUT),
        ("age", f"<{AGE_CUT:g}", study.age < AGE_CUT),
    ]
    groups += [("sex", str(value), study.sex == value) for value in sorted(set(study.sex))]
    for name, column, names in (
        ("hiv", study.hiv, ("positive", "negative")),
        ("symptoms", study.symptoms, ("present", "absent")),
    ):
        if column is None:
            continue
        groups += [
            (name, names[0], column == 1.0),
            (name, names[1], column == 0.0),
            (name, "unknown", np.isnan(column)),
        ]
    return [(name, group, mask) for name, group, mask in groups if mask.any()]


def calibrate(
    study: Study,
    thresholds: np.ndarray,
    *,
    cost_per_test: float | None = None,
    bands: list[SamplingBand] | None = None,
) -> Calibration:
    """Compute the calibration tables of a scored study.

    Args:
        study: a study whose scores are all set.
        thresholds: ascending thresholds in [0, 1].
        cost_per_test: cost of one confirmatory test (per-person ``test_cost`` wins).
        bands: sampling fractions by score band, for inverse-probability weighting.

    Returns:
        The calibration.

    Raises:
        StudyError: costs or sampling information do not fit the study.
    """
    if np.isnan(study.score).any():
        raise ValueError("the study has people without a score")
    weights, estimator, seen = _weights(study, bands)
    costs = _costs(study, cost_per_test)

    def table(mask: np.ndarray | None) -> ThresholdTable:
        pick = slice(None) if mask is None else mask
        return threshold_table(
            study.score[pick],
            study.reference[pick],
            thresholds,
            weights=None if weights is None else weights[pick],
            costs=None if costs is None else costs[pick],
        )

    strata = [Stratum(name, group, table(mask)) for name, group, mask in _groups(study)]
    return Calibration(
        study=study,
        overall=table(None),
        strata=strata,
        estimator=estimator,
        bias=_bias(study, estimator, seen),
        bands=seen,
        has_costs=costs is not None,
    )
