"""Scrape-time monitoring: feature drift (PSI) and alert rules, over a rolling window.

The request path only increments counters (:mod:`serving.metrics`). When ``/metrics``
is scraped, :func:`derived_text` reads the counters of every worker, takes the counts
of the last ``window_s`` seconds (:class:`~serving.monitor.drift.Window`) and adds:

- ``tonle_ncd_feature_psi{service,feature}``: PSI of each NCD input against the
  training distribution recorded in the artifact;
- ``tonle_alert_active{rule}`` (0 or 1) and ``tonle_alert_value{rule}`` for each rule
  of the serving config's ``monitoring.alerts``; ``tonle_alert_count{rule}``: the
  answers the value is over (a rule fires only from ``min_count`` answers on).

Alerts inform operators; they never make the service unready or change an answer.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.monitor.drift import FeatureBins, Window, psi

__all__ = [
    "GAUGES",
    "AlertRule",
    "AlertState",
    "Monitor",
    "MonitorConfig",
    "derived_text",
    "expected_of",
]

Samples = Mapping[str, list[tuple[dict[str, str], float]]]

# The gauges added at scrape time and their labels (for dashboards and their tests).
GAUGES: dict[str, tuple[str, ...]] = {
    "tonle_ncd_feature_psi": ("service", "feature"),
    "tonle_alert_active": ("rule",),
    "tonle_alert_value": ("rule",),
    "tonle_alert_count": ("rule",),
}


class AlertRule(BaseModel):
    """One alert: a monitored value of a service outside ``[low, high]``.

    ``flagged-fraction``: share of chest X-ray reads with ``finding`` flagged;
    ``refusal-rate``: share of answers that were no-advice or refused; ``psi``: the
    largest feature PSI of an NCD service (or of ``feature``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$", description="Label value.")
    metric: Literal["flagged-fraction", "refusal-rate", "psi"]
    service: str = Field(min_length=1, max_length=64)
    site: str | None = Field(default=None, max_length=64, description="Only this tenant.")
    finding: str | None = Field(default=None, max_length=32)
    feature: str | None = Field(default=None, max_length=64)
    low: float | None = None
    high: float | None = None
    min_count: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> AlertRule:
        if self.low is None and self.high is None:
            raise ValueError(f"alert {self.name}: give low, high or both")
        if self.metric == "flagged-fraction" and self.finding is None:
            raise ValueError(f"alert {self.name}: flagged-fraction needs a finding")
        return self


class MonitorConfig(BaseModel):
    """``monitoring`` in the serving config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(
        default=86_400.0, gt=0, description="Rolling window of drift and alerts (seconds)."
    )
    alerts: list[AlertRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> MonitorConfig:
        names = [rule.name for rule in self.alerts]
        if len(names) != len(set(names)):
            raise ValueError("monitoring.alerts: rule names must be unique")
        return self


@dataclass(frozen=True)
class AlertState:
    """One rule's value over the window and whether it fires."""

    rule: AlertRule
    value: float | None
    count: float
    active: bool


class Monitor:
    """The rolling windows of one worker (snapshots of all workers' counters)."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self._windows: dict[str, Window] = defaultdict(lambda: Window(config.window_s))

    def window(
        self, name: str, totals: dict[tuple[str, ...], float], now: float
    ) -> dict[tuple[str, ...], float]:
        """The window's counts of counter ``name``."""
        return self._windows[name].delta(now, totals)

    def evaluate(
        self,
        samples: Samples,
        expected: Mapping[str, Mapping[str, FeatureBins]],
        now: float | None = None,
    ) -> tuple[dict[tuple[str, str], tuple[float | None, float]], list[AlertState]]:
        """PSI per (service, feature) with its count, and every rule's state."""
        now = time.monotonic() if now is None else now
        bins = self.window("bins", _totals(samples, "tonle_ncd_feature_bins_total",
                                           ("service", "feature", "bin")), now)  # fmt: skip
        findings = self.window("findings", _totals(samples, "tonle_cxr_findings_total",
                               ("service", "site", "finding", "flagged")), now)  # fmt: skip
        answers = self.window("answers", _totals(samples, "tonle_answers_total",
                              ("service", "site", "outcome")), now)  # fmt: skip
        drift: dict[tuple[str, str], tuple[float | None, float]] = {}
        for service, features in expected.items():
            for feature, training in features.items():
                observed = [bins.get((service, feature, str(i)), 0.0)
                            for i in range(len(training.proportions))]  # fmt: skip
                drift[(service, feature)] = (psi(training.proportions, observed), sum(observed))
        states = []
        for rule in self.config.alerts:
            value, count = _value(rule, findings, answers, drift)
            low = rule.low if rule.low is not None else float("-inf")
            high = rule.high if rule.high is not None else float("inf")
            active = value is not None and count >= rule.min_count and not low <= value <= high
            states.append(AlertState(rule, value, count, active))
        return drift, states


def _totals(samples: Samples, name: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in samples.get(name, ()):
        out[tuple(labels.get(k, "") for k in keys)] += value
    return dict(out)


def _value(
    rule: AlertRule,
    findings: Mapping[tuple[str, ...], float],
    answers: Mapping[tuple[str, ...], float],
    drift: Mapping[tuple[str, str], tuple[float | None, float]],
) -> tuple[float | None, float]:
    def ours(service: str, site: str) -> bool:
        return service == rule.service and (rule.site is None or site == rule.site)

    if rule.metric == "flagged-fraction":
        reads = flagged = 0.0
        for (service, site, finding, is_flagged), n in findings.items():
            if ours(service, site) and finding == rule.finding:
                reads += n
                flagged += n if is_flagged == "true" else 0.0
        return (flagged / reads if reads else None), reads
    if rule.metric == "refusal-rate":
        total = refused = 0.0
        for (service, site, outcome), n in answers.items():
            if ours(service, site):
                total += n
                refused += n if outcome in ("no-advice", "refused") else 0.0
        return (refused / total if total else None), total
    worst: float | None = None
    count = 0.0
    for (service, feature), (value, n) in drift.items():
        mine = service == rule.service and rule.feature in (None, feature)
        if mine and value is not None and (worst is None or value > worst):
            worst, count = value, n
    return worst, count


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _gauge(name: str, help_text: str, rows: Iterable[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in rows:
        inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{inner}}} {value!r}")
    return lines


def derived_text(
    monitor: Monitor, samples: Samples, expected: Mapping[str, Mapping[str, FeatureBins]]
) -> str:
    """The drift and alert gauges, in Prometheus text format."""
    drift, states = monitor.evaluate(samples, expected)
    lines = _gauge(
        "tonle_ncd_feature_psi",
        "Population stability index of an NCD input over the window, against training.",
        (
            ({"service": s, "feature": f}, v)
            for (s, f), (v, _) in sorted(drift.items())
            if v is not None
        ),
    )
    lines += _gauge(
        "tonle_alert_active",
        "1 while a monitoring alert rule fires (monitoring.alerts); never affects readiness.",
        (({"rule": st.rule.name}, float(st.active)) for st in states),
    )
    lines += _gauge(
        "tonle_alert_value",
        "The value an alert rule watches, over the window (absent: nothing to compute).",
        (({"rule": st.rule.name}, st.value) for st in states if st.value is not None),
    )
    lines += _gauge(
        "tonle_alert_count",
        "Answers (reads, inputs) the alert value is computed over, in the window.",
        (({"rule": st.rule.name}, st.count) for st in states),
    )
    return "\n".join(lines) + "\n"


def expected_of(ncd: Mapping[str, Any]) -> dict[str, dict[str, FeatureBins]]:
    """Service id -> the training distribution of the model that answers it."""
    return {service: dict(p.metadata.ncd.training_distribution) for service, p in ncd.items()}
