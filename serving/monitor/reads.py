"""The chest X-ray reads of a period, streamed from the audit database.

Reads are stored in table ``imaging_results`` (:mod:`serving.imaging.results`), each in
the transaction of the audit row that answered with it. Monitoring reads them all, of
every tenant, in one pass over the period: the operator's view, never a caller's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from serving.audit import schema
from serving.audit.engine import READ_ONLY
from serving.imaging.results import FORMAT, CxrResult, StoredResult

__all__ = ["findings", "iter_reads", "read_of_request"]

_BATCH = 500


def iter_reads(
    engine: Engine, since: datetime, until: datetime | None = None
) -> Iterator[StoredResult]:
    """Every read made in ``[since, until)``, oldest first, with the tenant that made it.

    Reads stored in a layout this version does not know (a newer version during a
    rolling upgrade) are skipped, not guessed at.
    """
    table = schema.imaging_results
    query = select(table.c.tenant, table.c.format, table.c.result).where(
        table.c.created >= since.astimezone(UTC)
    )
    if until is not None:
        query = query.where(table.c.created < until.astimezone(UTC))
    query = query.order_by(table.c.created, table.c.result_id)
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})
        with connection.begin():
            result = connection.execution_options(yield_per=_BATCH).execute(query)
            for row in result:
                if row.format == FORMAT:
                    yield StoredResult(row.tenant, CxrResult.model_validate_json(row.result))


def findings(reads: Iterator[StoredResult]) -> Iterator[tuple[str, bool]]:
    """``(label, flagged)`` for every finding of every read."""
    for stored in reads:
        yield from ((f.label, f.flagged) for f in stored.result.findings)


def read_of_request(engine: Engine, request_id: str) -> CxrResult | None:
    """The read a request made (stored with its audit row), if it made one."""
    table = schema.imaging_results
    query = select(table.c.format, table.c.result).where(table.c.request_id == request_id)
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})
        with connection.begin():
            found = connection.execute(query).first()
    if found is None or found.format != FORMAT:
        return None
    return CxrResult.model_validate_json(found.result)
