"""The operators' audited reads (scrapes of ``/metrics`` and the like), in bulk."""

from __future__ import annotations

import asyncio
from datetime import datetime

from serving.audit import AuditRecord, AuditStore
from serving.audit.records import OPERATOR_SERVICES


def record_scrapes(store: AuditStore, count: int, created: datetime) -> None:
    """Store ``count`` operator reads at ``created``, spread over the operator routes,
    committed concurrently as the service commits them (a few group commits)."""
    services = sorted(OPERATOR_SERVICES)
    rows = [
        AuditRecord(
            request_id=f"scrape-{i}",
            service_id=services[i % len(services)],
            outcome="read",
            latency_ms=1.0,
            created=created,
        )
        for i in range(count)
    ]

    async def commit_all() -> None:
        await asyncio.gather(*(store.record_async(row) for row in rows))

    asyncio.run(commit_all())
