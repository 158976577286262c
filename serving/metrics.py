"""Tonle's own Prometheus metrics, exported on BentoML's ``/metrics``.

Request counts and latencies per route come from BentoML; these add what only Tonle
knows: how many calls ended in advice, no advice (by reason code), refusal or error.
Labels carry codes only (service id, outcome, reason family), never PHI.
"""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["count_outcome"]


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


def count_outcome(service: str, outcome: str, reason: str | None) -> None:
    """Count one answered call; ``reason`` is reduced to its family (before ``:``)."""
    family = (reason or "").split(":", 1)[0][:40]
    _outcomes().labels(service=service[:64], outcome=outcome, reason=family).inc()
