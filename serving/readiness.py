"""Readiness beyond start-up: whether the audit database takes writes right now.

The service answers no call without a committed audit row, so while the database is
down or full, ``/readyz`` turns 503 (load balancers send traffic elsewhere) and turns
200 again once writes work: no restart needed.

``/readyz`` itself is BentoML's route (it calls the service's ``__is_ready__``, which
asks :meth:`Readiness.ready`) and answers a bare status code. ``GET /readyz/detail``
(:func:`readiness_detail`, for operators holding the metrics token, audited like every
answer) says why: each check, whether it gates readiness, and every monitoring alert
rule with its state.
Alerts never gate readiness: a drifting input or a high flagged share is a reason to
look, not to take a replica out of the load balancer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from serving.http.audit import Exchange
from serving.http.pipeline import Answer, endpoint
from serving.metrics import current_samples, monitor_of
from serving.monitor.alerts import AlertState, expected_of, imaging_reference

if TYPE_CHECKING:
    from serving.runtime import Runtime

__all__ = ["AuditProbe", "Check", "Readiness", "ReplayStore", "readiness_detail"]

logger = logging.getLogger(__name__)

# The probe writes a throw-away replay-store row (this issuer, already expired, pruned
# with the others) at most this often.
_PROBE_EVERY_S = 1.0
_PROBE_ISSUER = "tonle:readiness-probe"


class ReplayStore(Protocol):
    """What the probe writes to (:class:`serving.audit.AuditStore`)."""

    def remember_jti(self, issuer: str, jti: str, expires: datetime) -> bool: ...


class AuditProbe:
    """Whether the audit database takes writes right now.

    At most one probe runs at a time, in a thread; between probes the last answer is
    reused. A probe still running after ``timeout_s`` (a hung database) counts as down.
    """

    def __init__(self, store: ReplayStore, every_s: float = _PROBE_EVERY_S, timeout_s: float = 2.0):
        self._store = store
        self._every_s = every_s
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._ok = True
        self._checked = -math.inf
        self._started = -math.inf

    async def ok(self) -> bool:
        """The last probe's answer, refreshed when it is older than ``every_s``."""
        now = time.monotonic()
        if self._lock.locked():
            return self._ok and now - self._started < self._timeout_s
        if now - self._checked < self._every_s:
            return self._ok
        async with self._lock:
            self._started = now
            self._ok = await asyncio.to_thread(self._write)
            self._checked = time.monotonic()
        return self._ok

    def _write(self) -> bool:
        try:
            self._store.remember_jti(_PROBE_ISSUER, uuid.uuid4().hex, datetime.now(UTC))
        except Exception as exc:  # any failure means: do not send traffic here
            logger.warning("readiness: audit database unavailable (%s)", type(exc).__name__)
            return False
        return True


@dataclass(frozen=True)
class Check:
    """One readiness check: ``gates`` says whether a failure makes ``/readyz`` 503."""

    name: str
    ok: bool
    gates: bool
    detail: str


class Readiness:
    """What ``/readyz`` answers and why: models warmed up, audit writes, not draining.

    One per worker (the service makes it at start-up and puts it at
    ``app.state.readiness``); ``draining`` turns true on SIGTERM.
    """

    def __init__(self, runtime: Runtime, probe: AuditProbe | None) -> None:
        self.runtime = runtime
        self.probe = probe
        self.draining = False

    async def ready(self) -> bool:
        """The ``/readyz`` answer (200 when True)."""
        if not self.runtime.ready or self.draining:
            return False
        return self.probe is None or await self.probe.ok()

    async def checks(self) -> list[Check]:
        """Every check, those that gate readiness first."""
        runtime, settings = self.runtime, self.runtime.settings
        tags = ", ".join(sorted(m.metadata.tag for m in runtime.models.values())) or "none"
        database = True if self.probe is None else await self.probe.ok()
        if settings.link_secret is not None:
            key = "configured" + (
                "; the previous key is accepted too" if settings.link_secret_previous else ""
            )
        else:
            key = "generated and kept in the database (dev mode or the demo only)"
        models = "verified and answered their golden input" if runtime.ready else "warming up"
        if self.probe is None:
            audit = "not probed here"
        elif database:
            audit = "the audit database takes writes"
        else:
            audit = "the audit database refuses writes: no call can be answered"
        stopping = "stopping (SIGTERM): in-flight calls finish" if self.draining else "no"
        return [
            Check("models", runtime.ready, True, f"{models}: {tags}"),
            Check("database", database, True, audit),
            Check("draining", not self.draining, True, stopping),
            Check("link-key", True, False, f"{key} (the service does not start without one)"),
        ]


def readiness_of(request: Request) -> Readiness:
    """The service's :class:`Readiness` (the app's; one unprobed for bare test apps)."""
    found = getattr(request.app.state, "readiness", None)
    if isinstance(found, Readiness):
        return found
    runtime: Runtime = request.app.state.runtime
    return Readiness(runtime, None)


def _alert(state: AlertState) -> dict[str, Any]:
    rule = state.rule
    return {
        "rule": rule.name,
        "state": "firing" if state.active else "ok",
        "metric": rule.metric,
        "service": rule.service,
        "site": rule.site,
        "finding": rule.finding,
        "feature": rule.feature,
        "value": state.value,
        "count": state.count,
        "min_count": rule.min_count,
        "low": rule.low,
        "high": rule.high,
        "since": None if state.since is None else state.since.isoformat(),
    }


async def _detail(request: Request, exchange: Exchange) -> Answer:
    """``GET /readyz/detail``: checks and alerts as JSON, for the holder of the metrics
    token (401 otherwise), audited (service ``readiness-detail``, outcome ``read``).

    Always 200 for an operator (the status code of readiness is ``/readyz``'s), except
    that, like every answer, it needs its audit row: while the audit database refuses
    writes it answers 503 ``audit-unavailable``, the reason ``/readyz`` fails then.
    Names no patient, but alert values are per-site rates, hence the token.
    """
    readiness = readiness_of(request)
    runtime = readiness.runtime
    checks = await readiness.checks()
    monitor = monitor_of(runtime)
    samples = await run_in_threadpool(current_samples)
    imaging = imaging_reference(runtime)
    _, states = monitor.evaluate(samples, expected_of(runtime.ncd), imaging=imaging)
    response = JSONResponse(
        {
            "ready": all(c.ok for c in checks if c.gates),
            "checks": [
                {"name": c.name, "ok": c.ok, "gates_readiness": c.gates, "detail": c.detail}
                for c in checks
            ],
            "alerts": [_alert(s) for s in states],
            "alerts_gate_readiness": False,
            "scope": {
                "worker_pid": os.getpid(),
                "window_s": monitor.config.window_s,
                "note": "Checks are this worker's. Alerts are computed by this worker "
                "from every worker's counters over its own rolling window; 'since' is "
                "when this worker first saw the rule in its present state.",
            },
        },
        headers={"Cache-Control": "no-store"},
    )
    return Answer(response, "read")


readiness_detail = endpoint("metrics-token", "readiness-detail", _detail)
