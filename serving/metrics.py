"""Tonle's Prometheus metrics, served on ``/metrics`` to authenticated scrapers only.

BentoML's own request metrics are switched off (they label series by the raw request
path, so result ids and card uuids became label values and any client could grow the
series without bound). Here every label is bounded: the route *template*
(``/v1/imaging/results/{result_id}``, ``unmatched`` for unknown paths), the method, the
status code, and codes (service id, outcome, reason family), never PHI.

``/metrics`` (:func:`serving.app.metrics`) needs ``Authorization: Bearer
<TONLE_METRICS_TOKEN>``; without a configured token it answers 401 to everyone (dev
mode: loopback clients only). Health probes (``/healthz``, ``/livez``, ``/readyz``)
stay open.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

__all__ = ["RouteMetrics", "count_outcome", "count_refusal", "exposition"]

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


def _family(reason: str | None) -> str:
    return (reason or "").split(":", 1)[0][:40]


def count_outcome(service: str, outcome: str, reason: str | None) -> None:
    """Count one answered call; ``reason`` is reduced to its family (before ``:``)."""
    _outcomes().labels(service=service[:64], outcome=outcome, reason=_family(reason)).inc()


def count_refusal(route: str, reason: str) -> None:
    """Count one refused caller (no audit row is written for it)."""
    _refusals().labels(route=route[:128], reason=_family(reason)).inc()


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
            total.labels(method=method, route=route, status=str(status)).inc()
            seconds.labels(method=method, route=route).observe(time.perf_counter() - started)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of every worker (multiprocess mode) and its content type."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
