"""Scrape-time monitoring: feature drift (PSI) and alert rules, over a rolling window.

The request path only increments counters (:mod:`serving.metrics`). When ``/metrics``
is scraped, :func:`derived_text` reads the counters of every worker, takes the counts
of the last ``window_s`` seconds (:class:`~serving.monitor.drift.Window`) and adds:

- ``tonle_ncd_feature_psi{service,feature}``: PSI of each NCD input against the
  training distribution recorded in the artifact;
- ``tonle_cxr_feature_psi{service,feature}``: PSI of each chest X-ray image statistic
  and calibrated score (:mod:`models.cxr_drift`) of the reads a service made, against
  the reference the chest X-ray artifact records (none: no such gauge);
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
from datetime import UTC, datetime
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
    "imaging_reference",
]

Samples = Mapping[str, list[tuple[dict[str, str], float]]]

# The gauges added at scrape time and their labels (for dashboards and their tests).
GAUGES: dict[str, tuple[str, ...]] = {
    "tonle_ncd_feature_psi": ("service", "feature"),
    "tonle_cxr_feature_psi": ("service", "feature"),
    "tonle_alert_active": ("rule",),
    "tonle_alert_value": ("rule",),
    "tonle_alert_count": ("rule",),
}


class AlertRule(BaseModel):
    """One alert: a monitored value of a service outside ``[low, high]``.

    ``flagged-fraction``: share of chest X-ray reads with ``finding`` flagged;
    ``refusal-rate``: share of answers that were no-advice or refused; ``psi``: the
    largest feature PSI of an NCD service or of a chest X-ray service's reads (or of
    ``feature``, e.g. ``age`` or ``image:mean`` / ``score:tb``).
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
    """One rule's value over the window, whether it fires, and since when (this
    worker's clock: when it first saw the rule in its present state)."""

    rule: AlertRule
    value: float | None
    count: float
    active: bool
    since: datetime | None = None


class Monitor:
    """The rolling windows of one worker (snapshots of all workers' counters)."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self._windows: dict[str, Window] = defaultdict(lambda: Window(config.window_s))
        self._changed: dict[str, tuple[bool, datetime]] = {}  # rule -> (active, since)

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
        imaging: Mapping[str, FeatureBins] | None = None,
    ) -> tuple[dict[tuple[str, str], tuple[float | None, float]], list[AlertState]]:
        """PSI per (service, feature) with its count, and every rule's state.

        ``expected``: NCD service -> its model's training distribution; ``imaging``: the
        chest X-ray model's reference, for every service that counted reads with it.
        """
        now = time.monotonic() if now is None else now
        keys = ("service", "feature", "bin")
        bins = self.window("bins", _totals(samples, "tonle_ncd_feature_bins_total", keys), now)
        reads = self.window("cxr-bins", _totals(samples, "tonle_cxr_feature_bins_total", keys),
                            now)  # fmt: skip
        if imaging:
            read_services = sorted({service for service, _, _ in reads} - set(expected))
            expected = {**expected, **dict.fromkeys(read_services, imaging)}
            bins = {**bins, **reads}  # services of either kind, never both
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
            changed = self._changed.get(rule.name)
            if changed is None or changed[0] != active:
                changed = self._changed[rule.name] = (active, datetime.now(UTC))
            states.append(AlertState(rule, value, count, active, changed[1]))
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
    monitor: Monitor,
    samples: Samples,
    expected: Mapping[str, Mapping[str, FeatureBins]],
    imaging: Mapping[str, FeatureBins] | None = None,
) -> str:
    """The drift and alert gauges, in Prometheus text format (``imaging``: the chest
    X-ray model's reference, see :meth:`Monitor.evaluate`)."""
    drift, states = monitor.evaluate(samples, expected, imaging=imaging)
    known = sorted((key, v) for key, (v, _) in drift.items() if v is not None)
    lines = _gauge(
        "tonle_ncd_feature_psi",
        "Population stability index of an NCD input over the window, against training.",
        (({"service": s, "feature": f}, v) for (s, f), v in known if s in expected),
    )
    lines += _gauge(
        "tonle_cxr_feature_psi",
        "Population stability index of a chest X-ray image statistic or calibrated score "
        "over the window, against the reference in the artifact.",
        (({"service": s, "feature": f}, v) for (s, f), v in known if s not in expected),
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


def imaging_reference(runtime: Any) -> dict[str, FeatureBins]:
    """The drift reference of the chest X-ray model ``runtime`` serves ({}: none)."""
    imaging = getattr(runtime, "imaging", None)
    return dict(imaging.analyser.reference) if imaging is not None else {}
