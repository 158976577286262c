"""Readiness beyond start-up: whether the audit database takes writes right now.

The service answers no call without a committed audit row, so while the database is
down or full, ``/readyz`` turns 503 (load balancers send traffic elsewhere) and turns
200 again once writes work: no restart needed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["AuditProbe", "ReplayStore"]

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
