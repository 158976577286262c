"""The audit store: audit rows, clinician feedback, API keys and the JWT replay store.

Every write commits before the method returns (durably: see :mod:`serving.audit.engine`).
Any database failure surfaces as :class:`AuditUnavailable`, which the web layer answers
with 503: the service never sends advice whose audit row was not committed. The store
is one object over one database, in parts by concern: audit rows here, feedback and
explanations in :mod:`serving.audit.feedback`, API keys, token ids and service secrets
in :mod:`serving.audit.keys`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from serving.audit import engine as _engine
from serving.audit import schema
from serving.audit.committer import GroupCommitter
from serving.audit.feedback import CardShown, FeedbackTables, feedback_values
from serving.audit.keys import API_KEY_PREFIX, KeyTables
from serving.audit.pixels import PixelTables
from serving.audit.records import AuditRecord
from serving.audit.tables import AuditUnavailable, utc, write
from serving.audit.writer import BatchWriter

__all__ = ["API_KEY_PREFIX", "AuditStore", "AuditUnavailable", "CardShown", "DuplicateRequest"]


class DuplicateRequest(ValueError):
    """An audit row with this request id already exists."""


class AuditStore(FeedbackTables, KeyTables, PixelTables):
    """Append-only audit trail plus the small mutable tables auth needs.

    Open it with :meth:`open`; it is thread-safe (one pooled engine). Feedback and
    explanations come from :class:`~serving.audit.feedback.FeedbackTables`, API keys,
    token ids and service secrets from :class:`~serving.audit.keys.KeyTables`, the
    retention of chest X-ray reader's copies from
    :class:`~serving.audit.pixels.PixelTables`.
    """

    def __init__(self, engine: Engine, replay_engine: Engine | None = None) -> None:
        super().__init__(engine, replay_engine)
        self._writer = BatchWriter(
            engine,
            [
                schema.audit_events,
                schema.audit_cards,
                schema.explanations,
                schema.imaging_results,
                schema.imaging_pixels,
                schema.feedback,
            ],
        )
        self._committer = GroupCommitter(self._write_rows)

    @classmethod
    def open(
        cls,
        database_url: str,
        *,
        migrate: bool = True,
        pixels_days: int = 0,
        **engine_kwargs: Any,
    ) -> AuditStore:
        """Connect to ``database_url`` and bring its schema up to date.

        Args:
            database_url: SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
            migrate: apply shipped Alembic migrations (default). When False, refuse a
                database that is not already at the shipped head.
            pixels_days: days chest X-ray reader's copies are kept, then emptied with
                the other expiring rows (0: for ever; ``TONLE_IMAGING_PIXELS_DAYS``).
            **engine_kwargs: passed to :func:`sqlalchemy.create_engine`.

        Raises:
            AuditUnavailable: the database cannot be reached or migrated.
        """
        engine = _engine.make_engine(database_url, **engine_kwargs)
        try:
            if migrate:
                _engine.upgrade(engine)
            elif _engine.current_revisions(engine) != _engine.head_revisions():
                raise AuditUnavailable(
                    "the audit database schema is not up to date: run `tonle db upgrade`"
                )
        except SQLAlchemyError as exc:
            engine.dispose()
            raise AuditUnavailable(f"audit database unavailable: {type(exc).__name__}") from exc
        # The JWT replay store commits without an fsync of its own; checked, that is safe.
        # Both engines use this one URL: one SQLite file and WAL, or one PostgreSQL WAL.
        # A durable commit syncs the WAL up to itself, earlier commits from any
        # connection included (SQLite FULL fsyncs the whole WAL file; frames already
        # checkpointed were synced then; PostgreSQL flushes up to its commit record),
        # and the authenticator awaits the jti commit before the route writes its audit
        # row. So a call answered with advice, "no advice" or stored feedback has its
        # jti on disk first; so does discovery, audited like every pipeline answer.
        # Answers without a durable commit after authentication (503 when the audit
        # commit failed) may lose their jti in a
        # power cut, not in a process crash; a copy of that token (5 min + 60 s
        # lifetime at most) could then be used once more, but that first answer gave
        # nothing, so a token still gets advice, data or a write at most once. A new JWT route
        # that returns data or stores anything must commit durably before answering.
        store = cls(engine, _engine.make_engine(database_url, durable=False, **engine_kwargs))
        store.pixels_days = pixels_days
        return store

    def close(self) -> None:
        """Commit queued rows, then release pooled connections."""
        self._committer.close()
        super().close()
        self._writer.close()
        self.engine.dispose()
        if self.replay_engine is not self.engine:
            self.replay_engine.dispose()

    # -- audit rows -------------------------------------------------------------------

    def record(self, row: AuditRecord) -> None:
        """Append one audit row (and its card index) and commit before returning.

        Rows from concurrent callers share one durable commit (group commit); each
        call still returns only after the commit that holds its row.

        Raises:
            DuplicateRequest: ``row.request_id`` (or a card uuid) was already recorded.
            AuditUnavailable: the row could not be committed; send no advice.
        """
        try:
            self._committer.commit(row)
        except IntegrityError as exc:
            raise DuplicateRequest(
                f"request id or card uuid already recorded: {row.request_id}"
            ) from exc

    async def record_async(self, row: AuditRecord) -> None:
        """:meth:`record` for async handlers, without holding a worker thread while waiting."""
        try:
            await self._committer.commit_async(row)
        except IntegrityError as exc:
            raise DuplicateRequest(
                f"request id or card uuid already recorded: {row.request_id}"
            ) from exc

    def _write_rows(self, rows: list[AuditRecord]) -> None:
        events: list[dict[str, Any]] = []
        cards: list[dict[str, str]] = []
        explanations: list[dict[str, Any]] = []
        imaging: list[dict[str, Any]] = []
        pixels: list[dict[str, Any]] = []
        feedback: list[dict[str, Any]] = []
        for row in rows:
            values = row.model_dump()
            values["created"] = utc(row.created)
            events.append(values)
            cards.extend({"card_uuid": c, "request_id": row.request_id} for c in row.card_ids)
            if row.explanation is not None:
                explanations.append(row.explanation.model_dump())
            read = row.imaging_result
            if read is not None:
                imaging.append(read.model_dump(exclude={"pixels"}) | {"request_id": row.request_id})
                if read.pixels is not None:
                    pixels.append(
                        {
                            "result_id": read.result_id,
                            "created": utc(read.created),
                            "data": read.pixels,
                        }
                    )
            feedback.extend(feedback_values(fb) for fb in row.feedback)

        # One transaction: explanations, imaging results (and their reader's copies) and
        # feedback cost no second commit (fsync), and none is stored without its audit row.
        write(
            self._writer,
            {
                "audit_events": events,
                "audit_cards": cards,
                "explanations": explanations,
                "imaging_results": imaging,
                "imaging_pixels": pixels,
                "feedback": feedback,
            },
        )

    def rows(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        request_id: str | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Audit rows in the order they were written, optionally filtered."""
        query = self._rows_query(since, until, request_id)
        if limit is not None:
            query = query.limit(limit)
        result = self._run(lambda c: c.execute(query).mappings().all(), read=True)
        return [self._audit_record(found) for found in result]

    def iter_rows(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        chunk: int = 1000,
        exclude_services: Collection[str] = (),
    ) -> Iterator[AuditRecord]:
        """Like :meth:`rows` but fetched ``chunk`` rows at a time (for large exports).

        ``exclude_services``: service ids whose rows the query leaves out (monitoring
        leaves out the operators' scrapes, thousands a day, in the database).
        """
        table = schema.audit_events
        last_id = 0
        while True:
            query = self._rows_query(since, until, None).where(table.c.id > last_id).limit(chunk)
            if exclude_services:
                query = query.where(table.c.service_id.not_in(sorted(exclude_services)))
            result = self._fetch_all(query)
            for found in result:
                yield self._audit_record(found)
            if len(result) < chunk:
                return
            last_id = result[-1]["id"]

    def rows_of_cards(self, cards: Collection[str], chunk: int = 500) -> dict[str, AuditRecord]:
        """Card uuid -> the audit row of the answer that carried it (unknown cards left out).

        Looked up through the card index, ``chunk`` cards a query, instead of reading
        every audit row.
        """
        events, index = schema.audit_events, schema.audit_cards
        wanted = sorted(cards)
        found: dict[str, AuditRecord] = {}
        for start in range(0, len(wanted), chunk):
            query = (
                select(index.c.card_uuid, events)
                .join(events, events.c.request_id == index.c.request_id)
                .where(index.c.card_uuid.in_(wanted[start : start + chunk]))
            )
            for match in self._fetch_all(query):
                values = dict(match)
                card = values.pop("card_uuid")
                found[card] = self._audit_record(values)
        return found

    def _fetch_all(self, query: Select[Any]) -> list[Any]:
        found: list[Any] = self._run(lambda c: list(c.execute(query).mappings().all()), read=True)
        return found

    @staticmethod
    def _rows_query(
        since: datetime | None, until: datetime | None, request_id: str | None
    ) -> Select[Any]:
        table = schema.audit_events
        query = select(table).order_by(table.c.id)
        if since is not None:
            query = query.where(table.c.created >= utc(since))
        if until is not None:
            query = query.where(table.c.created < utc(until))
        if request_id is not None:
            query = query.where(table.c.request_id == request_id)
        return query

    @staticmethod
    def _audit_record(found: Any) -> AuditRecord:
        values = {k: v for k, v in found.items() if k != "id"}
        values["created"] = utc(values["created"])
        return AuditRecord.model_validate(values)

    def count(self) -> int:
        """Number of audit rows."""
        query = select(func.count()).select_from(schema.audit_events)
        return int(self._run(lambda c: c.execute(query).scalar_one(), read=True))

    def request_for_card(self, card_uuid: str) -> str | None:
        """The request id whose response carried card ``card_uuid`` (None if unknown)."""
        table = schema.audit_cards
        query = select(table.c.request_id).where(table.c.card_uuid == card_uuid)
        found: str | None = self._run(lambda c: c.execute(query).scalar_one_or_none(), read=True)
        return found
