"""The model card's calibration-error interval and its poor-subgroup warnings."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from training import ncd_metrics as m
from training.ncd_card import subgroup_warnings
from training.ncd_evaluate import GroupMetrics, MetricCI, MetricSet, _ci, _ci_debiased


def _replicates(seed: int) -> np.ndarray:
    """ECE of a perfectly calibrated risk (y ~ Bernoulli(p)) over 200 bootstrap replicates."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.4, 3000)
    y = (rng.uniform(size=p.size) < p).astype(np.int64)
    c = m.bootstrap_weights(p.size, 200, seed)
    return np.asarray(m.ece(y, p, np.ones_like(p), c))


def test_ece_lies_inside_its_own_interval() -> None:
    outside = 0
    for seed in range(5):
        values = _replicates(seed)
        # The percentile interval of this upward-biased statistic sits above the
        # plug-in estimate (the card's old "0.011 (0.012 to 0.027)").
        old = _ci(values)
        assert old.value is not None
        assert old.ci_low is not None
        outside += old.value < old.ci_low
        new = _ci_debiased(values)
        assert new.value is not None
        assert new.ci_low is not None
        assert new.ci_high is not None
        assert 0.0 <= new.ci_low <= new.value <= new.ci_high
        assert new.value <= old.value  # the bias is removed, not added
    assert outside >= 1


def _set(auroc: float, low: float, high: float, n: int = 120) -> MetricSet:
    ci = MetricCI(value=auroc, ci_low=low, ci_high=high)
    return MetricSet(
        n=n, n_known=n, events=12, auroc=ci, harrell_c=ci, uno_c=ci,
        calibration_slope=ci, calibration_intercept=ci, brier=ci, ece=ci,
        net_benefit={}, treat_all_net_benefit={},
    )  # fmt: skip


def test_poor_subgroups_are_flagged() -> None:
    report = SimpleNamespace(
        subgroups=[
            GroupMetrics(group="age band", level="40-49", model=_set(0.423, 0.31, 0.55)),
            GroupMetrics(group="age band", level="50-59", model=_set(0.71, 0.66, 0.76)),
            # Above 0.6, but its interval includes 0.5: not shown to beat chance.
            GroupMetrics(group="sex", level="female", model=_set(0.64, 0.48, 0.80),
                         who=_set(0.75, 0.70, 0.80)),
        ]
    )  # fmt: skip
    text = "\n".join(subgroup_warnings(report))  # type: ignore[arg-type]
    assert "**age band: 40-49** (model, n = 120): AUROC 0.423 (0.310 to 0.550)" in text
    assert "sex: female** (model" in text
    assert "50-59" not in text
    assert "WHO chart" not in text
    assert "2 subgroup result(s)" in text
    assert subgroup_warnings(SimpleNamespace(subgroups=[])) == []  # type: ignore[arg-type]
