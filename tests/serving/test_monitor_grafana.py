"""The Grafana dashboard charts only metrics and labels the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "tonle-dashboard.json"
_PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile"}


def exported() -> dict[str, set[str]]:
    """Series names (with _total, _bucket ...) -> labels, read from serving/metrics.py.

    Read from the source rather than by creating the metrics: they register once per
    process in prometheus_client's default registry.
    """
    source = (ROOT / "serving" / "metrics.py").read_text()
    found = re.findall(
        r'(Counter|Histogram)\(\s*"(\w+)",\s*(?:"[^"]*"\s*)+,\s*\[([^\]]*)\]', source
    )
    series: dict[str, set[str]] = {}
    for kind, name, label_list in found:
        labels = set(re.findall(r'"(\w+)"', label_list))
        if kind == "Counter":
            series[f"{name}_total"] = labels
        else:
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = series[f"{name}_count"] = labels
    from serving.monitor.alerts import GAUGES

    series.update({name: set(labels) for name, labels in GAUGES.items()})
    return series


def exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_uses_only_exported_series_and_labels() -> None:
    series = exported()
    assert "tonle_outcomes_total" in series
    assert "tonle_http_request_duration_seconds_bucket" in series
    for expr in exprs():
        names = set(re.findall(r"\btonle_\w+", expr))
        assert names, expr
        for name in names:
            assert name in series, f"{name} is not exported: {expr}"
        labels = set().union(*(series[n] for n in names))
        used = set(re.findall(r"(\w+)\s*=~?\"", expr))
        for group in re.findall(r"by \(([^)]*)\)", expr):
            used.update(x.strip() for x in group.split(","))
        assert used - _PROMQL_WORDS <= labels, expr


def test_the_metrics_are_found_with_their_labels() -> None:
    series = exported()
    assert series["tonle_outcomes_total"] == {"service", "outcome", "reason"}
    assert series["tonle_refused_callers_total"] == {"route", "reason"}
    assert series["tonle_http_requests_total"] == {"method", "route", "status"}
    assert series["tonle_http_request_duration_seconds_bucket"] == {"method", "route", "le"}
    assert series["tonle_cxr_findings_total"] == {"service", "site", "finding", "flagged"}
    assert series["tonle_ncd_feature_psi"] == {"service", "feature"}
    assert series["tonle_cxr_feature_psi"] == {"service", "feature"}
    assert series["tonle_cxr_feature_bins_total"] == {"service", "feature", "bin"}


def test_the_scrape_time_gauges_are_written_with_their_declared_labels() -> None:
    from serving.monitor.alerts import GAUGES, AlertRule, Monitor, MonitorConfig, derived_text
    from serving.monitor.drift import FeatureBins

    rule = AlertRule(name="r", metric="psi", service="s", high=0.1, min_count=1)
    bins = {"s": {"age": FeatureBins(edges=[1.0], proportions=[0.5, 0.5], n=10)}}
    samples = {
        "tonle_ncd_feature_bins_total": [({"service": "s", "feature": "age", "bin": "1"}, 4.0)]
    }
    text = derived_text(Monitor(MonitorConfig(alerts=[rule])), samples, bins)
    for line in text.splitlines():
        if not line.startswith("#"):
            name, labels = re.match(r"(\w+)\{([^}]*)\}", line).groups()  # type: ignore[union-attr]
            assert set(re.findall(r"(\w+)=", labels)) == set(GAUGES[name]), line
