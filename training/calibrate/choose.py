"""Choose a site threshold from a calibration table by a stated rule, and record it.

Rules (one per study):

* ``min-sensitivity`` target: the **highest** threshold whose sensitivity lower 95 %
  bound is >= target. Sensitivity only falls as the threshold rises, so every lower
  threshold meets the target too (the lowest, 0, refers everyone); the highest one
  meets it with the fewest people referred for testing.
* ``budget`` target: among thresholds whose cost of confirmatory testing per 1,000
  screened is <= target, the one with the highest yield (ties: the higher threshold,
  fewer tests).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from models.site_threshold import (
    RecordModel,
    RecordRule,
    RecordStudy,
    SiteThresholdRecord,
)
from training.calibrate.cxr import Calibration

__all__ = ["NoThreshold", "choose", "make_record"]


class NoThreshold(ValueError):
    """No threshold in the table meets the rule."""


def choose(
    calibration: Calibration, kind: Literal["min-sensitivity", "budget"], target: float
) -> tuple[int, RecordRule]:
    """The index of the chosen row of ``calibration.overall`` and the rule in words.

    Raises:
        NoThreshold: no threshold meets the rule (or the study has no costs for a budget).
    """
    cols = calibration.overall.columns
    if kind == "min-sensitivity":
        if not 0.0 < target <= 1.0:
            raise NoThreshold(f"--min-sensitivity {target:g} is outside (0, 1]")
        low = np.nan_to_num(cols["sensitivity_ci_low"], nan=-1.0)
        meets = np.flatnonzero(low >= target)
        if not len(meets):
            best = float(np.nanmax(cols["sensitivity_ci_low"]))
            raise NoThreshold(
                f"no threshold has a sensitivity lower 95 % bound >= {target:g} "
                f"(the best is {best:.3f}: more cases in the study narrow the interval)"
            )
        index = int(meets[-1])
        text = (
            f"highest threshold whose sensitivity lower 95 % bound >= {target:g} "
            f"(fewest referrals meeting it)"
        )
    else:
        if not calibration.has_costs:
            raise NoThreshold("--budget needs costs: --cost-per-test or a test_cost column")
        if not (math.isfinite(target) and target >= 0):
            raise NoThreshold(f"--budget {target:g} must be a cost >= 0")
        cost = cols["cost_per_1000"]
        within = np.flatnonzero(cost <= target)
        if not len(within):
            raise NoThreshold(
                f"every threshold costs more than {target:g} per 1,000 screened "
                f"(the least is {float(np.nanmin(cost)):.2f})"
            )
        yields = cols["yield_per_1000"][within]
        if not yields.max() > 0:
            raise NoThreshold(f"no threshold costing <= {target:g} per 1,000 finds any case")
        index = int(within[np.flatnonzero(yields == yields.max())[-1]])
        text = f"highest yield with testing cost <= {target:g} per 1,000 screened"
    return index, RecordRule(kind=kind, target=target, text=text)


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def make_record(
    calibration: Calibration,
    index: int,
    rule: RecordRule,
    *,
    site: str,
    model: RecordModel,
    label: str,
    chosen_by: str,
    chosen_at: datetime | None = None,
) -> SiteThresholdRecord:
    """The site threshold record for row ``index`` of the overall table."""
    row = calibration.overall.row(index)
    study = calibration.study
    return SiteThresholdRecord(
        site=site,
        model=model,
        label=label,
        threshold=row["threshold"],
        rule=rule,
        numbers={name: _number(value) for name, value in row.items()},
        study=RecordStudy(
            file=study.path.name,
            sha256=study.sha256,
            screened=study.screened,
            with_reference=int(study.verified.sum()),
            estimator=calibration.estimator,
        ),
        chosen_by=chosen_by,
        chosen_at=chosen_at or datetime.now(UTC),
    )
