"""What the audit store's parts share: the engines, one way to run a transaction, and the
failure every part raises (:class:`AuditUnavailable`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from serving.audit import engine as _engine
from serving.audit.writer import BatchWriter

__all__ = ["AuditUnavailable", "Tables", "utc", "utc_or_none", "write"]

logger = logging.getLogger(__name__)

_PRUNE_EVERY_S = 60.0
T = TypeVar("T")


class AuditUnavailable(RuntimeError):
    """The audit database could not be reached or refused the write (answer 503)."""


def utc(value: datetime) -> datetime:
    """Aware UTC datetime from what the database returns (SQLite drops the zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    """:func:`utc`, passing None through."""
    return None if value is None else utc(value)


def write(writer: BatchWriter, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Commit ``rows``; a database failure other than a taken key is AuditUnavailable."""
    try:
        writer.write(rows)
    except IntegrityError:
        raise
    except SQLAlchemyError as exc:
        logger.error("audit database error: %s", type(exc).__name__)
        raise AuditUnavailable(f"audit database unavailable: {type(exc).__name__}") from exc


class Tables:
    """The engines one audit database is reached through, shared by the store's parts.

    ``engine`` commits durably; ``replay_engine`` (the same database) commits without an
    fsync of its own, for what may be lost in a power cut (token ids, purges).
    """

    def __init__(self, engine: Engine, replay_engine: Engine | None = None) -> None:
        self.engine = engine
        self.replay_engine = replay_engine or engine
        self._last_prune = 0.0
        self._prune_lock = threading.Lock()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def _run(
        self, work: Callable[[Any], T], *, read: bool = False, engine: Engine | None = None
    ) -> T:
        try:
            with (engine or self.engine).connect() as connection:
                if read:
                    connection.execution_options(**{_engine.READ_ONLY: True})
                with connection.begin():
                    return work(connection)
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            logger.error("audit database error: %s", type(exc).__name__)
            raise AuditUnavailable(f"audit database unavailable: {type(exc).__name__}") from exc

    def _maybe_prune(self) -> None:
        """Delete expired rows (:meth:`_prune_expired`), at most once a minute."""
        now = time.monotonic()
        if now - self._last_prune < _PRUNE_EVERY_S or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._last_prune = now
            self._prune_expired()
        finally:
            self._prune_lock.release()

    def _prune_expired(self) -> None:
        """What :meth:`_maybe_prune` deletes; each part that keeps expiring rows adds to it."""
