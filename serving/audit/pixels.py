"""The reader's copies of chest X-rays, kept for the site's retention and then emptied.

A read (``imaging_results``) is part of the clinical record and append-only. The copy
of its original that the X-ray reader windows (``imaging_pixels``, 0.5-0.9 MB a read)
is a convenience: the PACS holds the image. A site keeps copies
``TONLE_IMAGING_PIXELS_DAYS`` days (0, the default: for ever). The service empties older
ones with the other expiring rows (:meth:`~serving.audit.tables.Tables._maybe_prune`,
at most once a minute, one batch at a time) and ``tonle db prune-pixels`` does it on
demand. Emptying sets ``data`` to NULL and stamps ``removed``: the row stays, so the
reader can say when and why the copy went, and the read still opens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from serving.audit import schema
from serving.audit.tables import AuditUnavailable, Tables, utc

__all__ = ["PixelTables", "Pruned"]

logger = logging.getLogger(__name__)

# Copies emptied per transaction: 93 (71 MB) took 0.4-0.9 s on SQLite (it reads each
# freed page), holding the write lock that audit commits wait for; 25 hold it a quarter
# of that, and one batch a minute still empties 36,000 copies a day.
BATCH = 25


@dataclass(frozen=True)
class Pruned:
    """Reader's copies emptied (or that a dry run would empty) and their stored bytes."""

    copies: int = 0
    bytes: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.copies + other.copies, self.bytes + other.bytes)


class PixelTables(Tables):
    """Retention of the reader's copies (part of the audit store).

    Attributes:
        pixels_days: days a copy is kept (0: for ever); set by
            :meth:`serving.audit.AuditStore.open` from ``TONLE_IMAGING_PIXELS_DAYS``.
    """

    pixels_days: int = 0

    def pixels_cutoff(self, days: int, now: datetime | None = None) -> datetime:
        """Copies of reads made before this are past a retention of ``days``."""
        return utc(now or datetime.now(UTC)) - timedelta(days=days)

    def pixels_to_prune(self, before: datetime) -> Pruned:
        """What :meth:`prune_pixels` would empty now (a dry run: nothing changes)."""
        table = schema.imaging_pixels
        query = select(func.count(), func.coalesce(func.sum(func.length(table.c.data)), 0))
        query = query.where(table.c.data.is_not(None), table.c.created < utc(before))
        copies, size = self._run(lambda c: c.execute(query).one(), read=True)
        return Pruned(int(copies), int(size))

    def prune_pixels(self, before: datetime, *, batches: int | None = None) -> Pruned:
        """Empty the copies of reads made before ``before``, :data:`BATCH` a transaction.

        Args:
            before: the cutoff (:meth:`pixels_cutoff`).
            batches: the most transactions to run (None: until none is left).

        Raises:
            AuditUnavailable: the database failed (copies emptied so far stay emptied).
        """
        cutoff, total, runs = utc(before), Pruned(), 0
        while batches is None or runs < batches:
            # Not durable on its own: a prune lost in a power cut is simply done again.
            done = self._run(lambda c: _empty_batch(c, cutoff), engine=self.replay_engine)
            total, runs = total + done, runs + 1
            if done.copies < BATCH:
                break
        if total.copies:
            logger.info(
                "imaging retention: emptied %d reader copies (%d bytes) of reads made before %s",
                total.copies,
                total.bytes,
                cutoff.isoformat(timespec="seconds"),
            )
        return total

    def _prune_expired(self) -> None:
        super()._prune_expired()
        if not self.pixels_days:
            return
        try:
            self.prune_pixels(self.pixels_cutoff(self.pixels_days), batches=1)
        except AuditUnavailable:  # e.g. a service role without UPDATE: the next try
            # A failed retention must not fail the token or page check that ran it.
            logger.warning("imaging retention: emptying reader copies failed; retried later")


def _empty_batch(connection: Any, before: datetime) -> Pruned:
    table = schema.imaging_pixels
    # SKIP LOCKED (PostgreSQL): the service and `tonle db prune-pixels` running at once
    # each empty different copies and count each copy once. SQLite serialises writers.
    found = connection.execute(
        select(table.c.result_id, func.length(table.c.data))
        .where(table.c.data.is_not(None), table.c.created < before)
        .order_by(table.c.created)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    if not found:
        return Pruned()
    ids = [result_id for result_id, _ in found]
    emptied = update(table).where(table.c.result_id.in_(ids))
    connection.execute(emptied.values(data=None, removed=datetime.now(UTC)))
    return Pruned(len(found), sum(int(size) for _, size in found))
