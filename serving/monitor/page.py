"""What the operators' monitoring page (``/ui/monitor``) shows, from the live counters.

Built from the same counters ``/metrics`` exports (every worker's, see
:mod:`serving.metrics`), by site (calling tenant): volume and outcomes, reason
categories, share flagged per chest X-ray finding, NCD risk bands shown, accepted /
overridden feedback and coded override reasons, feature drift (PSI) and alert rules,
chest X-ray drift (PSI of image statistics and scores, its own section) and mean
latency per route. Charts are inline SVG drawn here: no script at all.

Below them, subgroups over the last ``days`` (``?days=``, 1-365, default 30) from the
audit database: volume, flagged share and accept / override rates by age band, sex
and (for operators) site, small cells suppressed (:mod:`serving.monitor.subgroups`).

``site`` limits everything per site to one tenant (an API key's caller); drift,
alerts and latency are service-wide and shown to operators (``site`` None) only.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape

from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from serving.body import BadRequest
from serving.http.audit import Exchange
from serving.http.pipeline import Answer, endpoint
from serving.metrics import current_samples, monitor_of
from serving.monitor.alerts import AlertState, Monitor, expected_of, imaging_reference
from serving.monitor.drift import FeatureBins
from serving.monitor.subgroups import (
    MAX_ANSWERS,
    MIN_CELL,
    ServiceSubgroups,
    count_subgroups,
    shown,
)
from serving.ui.render import render_page, runtime_of

__all__ = ["MonitorView", "SiteView", "bar_chart", "build_view", "monitor_page"]

logger = logging.getLogger(__name__)

Samples = Mapping[str, list[tuple[dict[str, str], float]]]


def _counts() -> defaultdict[str, float]:
    return defaultdict(float)


@dataclass
class SiteView:
    """One (service, site) over the service's lifetime (counters since start)."""

    service: str
    site: str
    outcomes: defaultdict[str, float] = field(default_factory=_counts)
    categories: defaultdict[str, float] = field(default_factory=_counts)
    silent: float = 0.0
    reads: defaultdict[str, float] = field(default_factory=_counts)  # finding -> reads
    flagged: defaultdict[str, float] = field(default_factory=_counts)  # finding -> flagged
    bands: defaultdict[str, float] = field(default_factory=_counts)
    feedback: defaultdict[str, float] = field(default_factory=_counts)  # accepted / overridden
    override_reasons: defaultdict[str, float] = field(default_factory=_counts)

    @property
    def calls(self) -> float:
        """Audited answers."""
        return sum(self.outcomes.values())

    def share(self, part: float, whole: float) -> float | None:
        """``part / whole`` (None when ``whole`` is 0)."""
        return part / whole if whole else None

    def flagged_percent(self) -> list[tuple[str, float]]:
        """Per finding, the percentage of reads flagged."""
        return [(f, 100 * self.flagged[f] / n) for f, n in sorted(self.reads.items()) if n]


@dataclass
class MonitorView:
    """Everything the page shows."""

    sites: list[SiteView]
    drift: list[tuple[str, str, float, float]]  # service, feature, psi, count
    alerts: list[AlertState]
    latency: list[tuple[str, float, float]]  # route, requests, mean seconds
    operator: bool
    cxr_drift: list[tuple[str, str, float, float]] = field(default_factory=list)  # as drift

    def drift_by_service(self) -> dict[str, list[tuple[str, float]]]:
        """Service -> (feature, PSI) rows."""
        out: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for service, feature, value, _ in self.drift:
            out[service].append((feature, value))
        return dict(out)

    def cxr_drift_by_service(self) -> dict[str, list[tuple[str, float]]]:
        """Chest X-ray service -> (image statistic or score, PSI) rows."""
        out: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for service, feature, value, _ in self.cxr_drift:
            out[service].append((feature, value))
        return dict(out)

    def latency_ms(self) -> list[tuple[str, float]]:
        """(route, mean milliseconds) rows."""
        return [(route, 1000 * mean) for route, _, mean in self.latency]


def build_view(
    samples: Samples,
    *,
    monitor: Monitor,
    expected: Mapping[str, Mapping[str, FeatureBins]],
    site: str | None,
    imaging: Mapping[str, FeatureBins] | None = None,
) -> MonitorView:
    """The page's figures; ``site``: only that tenant's rows (None: operator, all);
    ``imaging``: the chest X-ray model's drift reference."""
    views: dict[tuple[str, str], SiteView] = {}

    def view(labels: Mapping[str, str]) -> SiteView | None:
        key = (labels.get("service", ""), labels.get("site", "-"))
        if site is not None and key[1] != site:
            return None
        return views.setdefault(key, SiteView(*key))

    for labels, value in samples.get("tonle_answers_total", ()):
        if (v := view(labels)) is not None:
            v.outcomes[labels["outcome"]] += value
            if labels["category"] != "none":
                v.categories[labels["category"]] += value
            if labels["mode"] == "silent":
                v.silent += value
    for labels, value in samples.get("tonle_cxr_findings_total", ()):
        if (v := view(labels)) is not None:
            v.reads[labels["finding"]] += value
            if labels["flagged"] == "true":
                v.flagged[labels["finding"]] += value
    for labels, value in samples.get("tonle_ncd_bands_total", ()):
        if (v := view(labels)) is not None:
            v.bands[labels["band"]] += value
    for labels, value in samples.get("tonle_feedback_total", ()):
        if (v := view(labels)) is not None:
            v.feedback[labels["outcome"]] += value
            if labels["outcome"] == "overridden":
                v.override_reasons[labels["reason"]] += value
    operator = site is None
    drift: list[tuple[str, str, float, float]] = []
    alerts: list[AlertState] = []
    latency: list[tuple[str, float, float]] = []
    cxr_drift: list[tuple[str, str, float, float]] = []
    if operator:
        psi, alerts = monitor.evaluate(samples, expected, imaging=imaging)
        rows = [(s, f, v, n) for (s, f), (v, n) in sorted(psi.items()) if v is not None]
        drift = [row for row in rows if row[0] in expected]
        cxr_drift = [row for row in rows if row[0] not in expected]
        latency = _latency(samples)
    return MonitorView(sorted(views.values(), key=lambda v: (v.service, v.site)), drift,
                       alerts, latency, operator, cxr_drift)  # fmt: skip


def _latency(samples: Samples) -> list[tuple[str, float, float]]:
    count: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)
    for labels, value in samples.get("tonle_http_request_duration_seconds_count", ()):
        count[labels["route"]] += value
    for labels, value in samples.get("tonle_http_request_duration_seconds_sum", ()):
        total[labels["route"]] += value
    return [(route, n, total[route] / n) for route, n in sorted(count.items()) if n]


def bar_chart(
    rows: Iterable[tuple[str, float]], *, limit: float | None = None, unit: str = ""
) -> Markup:
    """A horizontal bar chart as inline SVG; ``limit`` draws a red rule at that value."""
    items = list(rows)
    if not items:
        return Markup("")
    top = max([v for _, v in items] + [limit or 0.0]) or 1.0
    width, bar, label_w = 420, 18, 160
    scale = (width - label_w - 60) / top
    parts = []
    for i, (label, value) in enumerate(items):
        y = i * (bar + 4)
        parts.append(
            f"<text x='0' y='{y + 13}' font-size='12'>{escape(label)}</text>"
            f"<rect x='{label_w}' y='{y}' width='{max(value * scale, 1):.1f}' height='{bar}' "
            f"fill='#4a7ab5'><title>{escape(label)}: {value:.3g}{escape(unit)}</title></rect>"
            f"<text x='{label_w + value * scale + 4:.1f}' y='{y + 13}' font-size='12'>"
            f"{value:.3g}{escape(unit)}</text>"
        )
    height = len(items) * (bar + 4)
    if limit is not None:
        x = label_w + limit * scale
        parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='0' y2='{height}' stroke='#b00' />")
    spoken = "; ".join(f"{label}: {value:.3g}{unit}" for label, value in items)
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' role='img' class='chart' width='{width}' "
        f"aria-label='{escape(spoken)}' "
        f"height='{height}' viewBox='0 0 {width} {height}'>{''.join(parts)}</svg>"
    )
    return Markup(svg)  # noqa: S704 - every label is escaped above


async def _monitor(request: Request, exchange: Exchange) -> Answer:
    """``GET /ui/monitor``: the metrics token (operators: every site, drift, alerts,
    latency) or an API key (that key's tenant's rows only); 401 otherwise. Audited
    (service ``ui-monitor``, outcome ``read``) with the caller and its tenant.

    Raises:
        BadRequest: ``days`` is not a whole number from 1 to 365 (audited as refused).
    """
    runtime = runtime_of(request)
    caller = exchange.caller
    assert caller is not None  # authenticated by the pipeline
    site: str | None = None  # None: the operator's view, every site
    tenant: str | None = None
    if caller.kind not in ("operator", "dev"):  # an API key: its own tenant only
        site = (caller.tenant or "-")[:64]
        tenant = caller.tenant or ""
    raw_days = request.query_params.get("days", "30")
    if not re.fullmatch(r"[0-9]{1,3}", raw_days) or not 1 <= int(raw_days) <= 365:
        raise BadRequest("bad-request", "days: 1 to 365", field="days")
    days = int(raw_days)
    samples = await run_in_threadpool(current_samples)
    view = build_view(
        samples,
        monitor=monitor_of(runtime),
        expected=expected_of(runtime.ncd),
        site=site,
        imaging=imaging_reference(runtime),
    )
    subgroups: list[ServiceSubgroups] | None = None  # None: the database did not answer
    capped = False
    engine = getattr(runtime.audit, "engine", None)
    if engine is not None:
        since = datetime.now(UTC) - timedelta(days=days)
        try:
            subgroups, capped = await run_in_threadpool(
                count_subgroups, engine, since=since, tenant=tenant
            )
        except SQLAlchemyError as exc:  # the counters above still help
            logger.warning("monitor: subgroups unavailable (%s)", type(exc).__name__)
    page = render_page(
        request,
        "monitor.html",
        view=view,
        chart=bar_chart,
        subgroups=subgroups,
        shown=shown,
        capped=capped,
        days=days,
        min_cell=MIN_CELL,
        max_answers=MAX_ANSWERS,
    )
    return Answer(page, "read")


monitor_page = endpoint("metrics-token-or-api-key", "ui-monitor", _monitor)
