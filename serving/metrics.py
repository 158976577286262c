"""Tonle's Prometheus metrics, served on ``/metrics`` to authenticated scrapers only.

BentoML's own request metrics are switched off (they label series by the raw request
path, so result ids and card uuids became label values and any client could grow the
series without bound). Here every label is bounded: the route *template*
(``/v1/imaging/results/{result_id}``, ``unmatched`` for unknown paths), the method, the
status code, and codes (service id, outcome, reason family), never PHI.

``/metrics`` (:func:`serving.app.metrics`, a pipeline endpoint: each scrape audited)
needs ``Authorization: Bearer <TONLE_METRICS_TOKEN>`` (the ``metrics-token`` scheme of
:mod:`serving.http.identify`); without a configured token it answers 401 to everyone
(dev mode: loopback clients only). Health probes (``/healthz``, ``/livez``,
``/readyz``) stay open.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from serving.audit.records import OPERATOR_SERVICES

if TYPE_CHECKING:
    from models.metadata import ModelMetadata
    from serving.audit.records import AuditRecord, FeedbackRecord
    from serving.monitor.drift import FeatureBins

__all__ = [
    "CATEGORIES",
    "RouteMetrics",
    "category",
    "count_feedback",
    "count_outcome",
    "count_refusal",
    "current_samples",
    "exposition",
    "monitor_of",
    "observe_answer",
    "observe_features",
    "observe_read",
]

_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


@cache
def _outcomes() -> Any:
    # Created on first use, inside the serving worker, after BentoML has set up
    # prometheus_client's multiprocess directory.
    from prometheus_client import Counter

    return Counter(
        "tonle_outcomes",
        "Tonle calls by service, outcome (advice/no-advice/refused/error) and reason code.",
        ["service", "outcome", "reason"],
    )


@cache
def _refusals() -> Any:
    from prometheus_client import Counter

    return Counter(
        "tonle_refused_callers",
        "Calls refused before authentication succeeded, by route template and reason code.",
        ["route", "reason"],
    )


@cache
def _requests() -> tuple[Any, Any]:
    from prometheus_client import Counter, Histogram

    total = Counter(
        "tonle_http_requests",
        "HTTP requests by method, route template and status code.",
        ["method", "route", "status"],
    )
    seconds = Histogram(
        "tonle_http_request_duration_seconds",
        "HTTP request duration by method and route template.",
        ["method", "route"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    )
    return total, seconds


# Why a call gave no advice, as a closed set of monitoring categories (label values).
CATEGORIES = (
    "none",
    "quality-gate",
    "out-of-distribution",
    "insufficient-data",
    "stale-data",
    "out-of-range",
    "invalid-request",
    "unavailable",
    "other",
)
_SAME = frozenset({"out-of-distribution", "insufficient-data", "stale-data", "out-of-range"})
_INVALID = frozenset({"invalid-request", "bad-request", "invalid-patient", "too-large"})
_UNAVAILABLE = frozenset({"model-error", "overloaded", "audit-unavailable", "model-unavailable"})


@cache
def _quality_reasons() -> frozenset[str]:
    from models.cxr_quality import QUALITY_REASONS

    return frozenset(QUALITY_REASONS) - {"out-of-distribution"}


@cache
def category(reason: str | None) -> str:
    """The monitoring category (one of :data:`CATEGORIES`) of a reason code."""
    if not reason:
        return "none"
    family = _family(reason)
    if family in _SAME:
        return family
    if family in _quality_reasons():
        return "quality-gate"
    if family in _INVALID:
        return "invalid-request"
    if family in _UNAVAILABLE:
        return "unavailable"
    return "other"


@cache
def _scores() -> Any:
    from prometheus_client import Histogram

    return Histogram(
        "tonle_cxr_score",
        "Chest X-ray model probabilities by service and finding (score distribution drift).",
        ["service", "finding"],
        buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    )


@cache
def _monitoring() -> tuple[Any, Any, Any, Any]:
    from prometheus_client import Counter

    answers = Counter(
        "tonle_answers",
        "Audited answers by service, site (calling tenant), mode (live/silent), outcome "
        "and reason category.",
        ["service", "site", "mode", "outcome", "category"],
    )
    findings = Counter(
        "tonle_cxr_findings",
        "Chest X-ray findings read, by service, site, finding and whether it was flagged.",
        ["service", "site", "finding", "flagged"],
    )
    bands = Counter(
        "tonle_ncd_bands",
        "NCD risk cards by service, site and the risk band they showed.",
        ["service", "site", "band"],
    )
    feedback = Counter(
        "tonle_feedback",
        "Clinician feedback by service, site, outcome (accepted/overridden) and coded "
        "override reason ('none' when not given, 'other' when not a Tonle code).",
        ["service", "site", "outcome", "reason"],
    )
    return answers, findings, bands, feedback


def _site(tenant: str | None) -> str:
    return (tenant or "-")[:64]


_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def _child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)`` (values in the order of its label names), looked up once
    per metric and values: a dict hit instead of prometheus_client's checks and lock on
    every count. Bounded as the labels are; the metrics live as long as the process."""
    key = (id(metric), values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return child


def observe_answer(row: AuditRecord) -> None:
    """Count one committed answer for monitoring: its category, and the findings
    flagged (a new chest X-ray read) or the risk band shown (an NCD card). The
    operators' own reads (:data:`~serving.audit.records.OPERATOR_SERVICES`) are not
    answers to the service's users: they are counted in ``tonle_outcomes`` only."""
    if row.service_id in OPERATOR_SERVICES:
        return
    answers, findings, bands, _ = _monitoring()
    service, site = row.service_id[:64], _site(row.caller_tenant)
    _child(answers, service, site, row.mode, row.outcome, category(row.reason)).inc()
    if row.imaging_result is not None:
        scores = _scores()
        for finding in json.loads(row.imaging_result.result).get("findings", ()):
            label = str(finding.get("label"))[:32]
            flagged = "true" if finding.get("flagged") else "false"
            _child(findings, service, site, label, flagged).inc()
            _child(scores, service, label).observe(float(finding.get("probability", 0.0)))
    if row.explanation is not None and row.outcome == "advice":
        band = row.explanation.band
        if band is not None:
            _child(bands, service, site, band[:16]).inc()


def count_feedback(fb: FeedbackRecord) -> None:
    """Count one stored feedback entry; the override reason is a Tonle code or 'other'."""
    from serving.cards import OVERRIDE_CODES, OVERRIDE_SYSTEM

    reason = fb.override_reason
    if fb.outcome == "accepted" or reason is None or reason.code is None:
        code = "none"
    elif reason.system in (OVERRIDE_SYSTEM, None) and reason.code in OVERRIDE_CODES:
        code = reason.code
    else:
        code = "other"
    _child(_monitoring()[3], fb.service_id[:64], _site(fb.caller_tenant), fb.outcome, code).inc()


@cache
def _feature_bins() -> Any:
    from prometheus_client import Counter

    return Counter(
        "tonle_ncd_feature_bins",
        "NCD inputs answered with advice, by service, feature and the index of the "
        "training-distribution bin the value fell in (for drift: tonle_ncd_feature_psi).",
        ["service", "feature", "bin"],
    )


_Binned = tuple[tuple[str, "FeatureBins", dict[str, float]], ...]
_BINS: dict[int, tuple[ModelMetadata, _Binned]] = {}  # id -> (kept alive, its bins)


def _bins_of(metadata: ModelMetadata) -> _Binned:
    kept = _BINS.get(id(metadata))
    found = kept[1] if kept is not None and kept[0] is metadata else None
    if found is None:
        details = metadata.ncd
        found = tuple(
            (name, bins, dict(details.encodings.get(name, {})))
            for name, bins in details.training_distribution.items()
        )
        _BINS[id(metadata)] = (metadata, found)
    return found


def observe_features(
    service: str, metadata: ModelMetadata, features: Mapping[str, float | str]
) -> None:
    """Count the training-distribution bin of each input of one answer (no values kept)."""
    from serving.monitor.drift import bin_of

    counter, service = _feature_bins(), service[:64]
    for name, bins, codes in _bins_of(metadata):
        raw = features.get(name)
        if raw is None:
            continue
        value = codes.get(raw) if isinstance(raw, str) else float(raw)
        if value is None or value != value:  # unknown code or NaN: not a value to bin
            continue
        _child(counter, service, name, str(bin_of(value, bins))).inc()


@cache
def _cxr_feature_bins() -> Any:
    from prometheus_client import Counter

    return Counter(
        "tonle_cxr_feature_bins",
        "Chest X-ray reads by service, monitored value (image:*, source:*, score:<label>) "
        "and the index of the training-distribution bin it fell in (for drift: "
        "tonle_cxr_feature_psi).",
        ["service", "feature", "bin"],
    )


def observe_read(
    service: str, reference: Mapping[str, FeatureBins], values: Mapping[str, float]
) -> None:
    """Count the reference bin of each monitored value of one committed chest X-ray
    read (:mod:`models.cxr_drift`; no values kept). Names without a reference are skipped."""
    from serving.monitor.drift import bin_of

    counter = _cxr_feature_bins()
    for name, value in values.items():
        bins = reference.get(name)
        if bins is not None and value == value:  # NaN: not a value to bin
            _child(counter, service[:64], name[:64], str(bin_of(value, bins))).inc()


def _family(reason: str | None) -> str:
    return (reason or "").split(":", 1)[0][:40]


def count_outcome(service: str, outcome: str, reason: str | None) -> None:
    """Count one answered call; ``reason`` is reduced to its family (before ``:``)."""
    _child(_outcomes(), service[:64], outcome, _family(reason)).inc()


def count_refusal(route: str, reason: str) -> None:
    """Count one refused caller (no audit row is written for it)."""
    _child(_refusals(), route[:128], _family(reason)).inc()


class RouteMetrics:
    """ASGI middleware counting requests by route template, method and status."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        outer = scope.get("route")  # BentoML's mount of this app: not a route of ours

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            matched = scope.get("route")
            route = "unmatched" if matched is outer else str(getattr(matched, "path", "unmatched"))
            method = scope.get("method", "GET")
            method = method if method in _METHODS else "OTHER"
            total, seconds = _requests()
            _child(total, method, route, str(status)).inc()
            _child(seconds, method, route).observe(time.perf_counter() - started)


_MONITORS: dict[int, Any] = {}  # id(monitoring config) -> this worker's rolling windows

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _registry() -> Any:
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def samples_of(registry: Any) -> Samples:
    """Every sample of ``registry`` (all workers' in multiprocess mode), by name."""
    found: Samples = {}
    for family in registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def monitor_of(runtime: Any) -> Any:
    """This worker's :class:`serving.monitor.alerts.Monitor` for ``runtime``'s config."""
    from serving.monitor.alerts import Monitor

    config = runtime.config.monitoring
    return _MONITORS.setdefault(id(config), Monitor(config))


def exposition(runtime: Any = None) -> tuple[bytes, str]:
    """The Prometheus text of every worker (multiprocess mode) and its content type.

    With ``runtime``, also the scrape-time drift and alert gauges of
    :mod:`serving.monitor.alerts`, computed from the counters just collected.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = _registry()
    text = generate_latest(registry)
    if runtime is None:
        return text, CONTENT_TYPE_LATEST
    from serving.monitor.alerts import derived_text, expected_of, imaging_reference

    derived = derived_text(
        monitor_of(runtime),
        samples_of(registry),
        expected_of(runtime.ncd),
        imaging_reference(runtime),
    )
    return text + derived.encode(), CONTENT_TYPE_LATEST


def current_samples() -> Samples:
    """The samples of every worker right now (for the operators' monitoring page)."""
    return samples_of(_registry())
