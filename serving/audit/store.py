"""The audit store: audit rows, clinician feedback, API keys and the JWT replay store.

Every write commits before the method returns (durably: see :mod:`serving.audit.engine`).
Any database failure surfaces as :class:`AuditUnavailable`, which the web layer answers
with 503: the service never sends advice whose audit row was not committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, Select, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from serving.audit import engine as _engine
from serving.audit import schema
from serving.audit.committer import GroupCommitter
from serving.audit.records import (
    ApiKeyInfo,
    AuditRecord,
    ExplanationRecord,
    FeedbackRecord,
    OverrideReason,
)
from serving.audit.writer import BatchWriter

__all__ = ["API_KEY_PREFIX", "AuditStore", "AuditUnavailable", "CardShown", "DuplicateRequest"]

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "tonle"
_PRUNE_EVERY_S = 60.0
T = TypeVar("T")


class AuditUnavailable(RuntimeError):
    """The audit database could not be reached or refused the write (answer 503)."""


class DuplicateRequest(ValueError):
    """An audit row with this request id already exists."""


@dataclass(frozen=True)
class CardShown:
    """Which service answered a card, and to whom (from the card's audit row)."""

    service_id: str
    caller_iss: str | None
    caller_tenant: str | None


def _utc(value: datetime) -> datetime:
    """Aware UTC datetime from what the database returns (SQLite drops the zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _jti_row(issuer: str, jti: str, expires: datetime) -> dict[str, Any]:
    return {"issuer": issuer, "jti": jti, "expires": _utc(expires)}


def _write(writer: BatchWriter, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Commit ``rows``; a database failure other than a taken key is AuditUnavailable."""
    try:
        writer.write(rows)
    except IntegrityError:
        raise
    except SQLAlchemyError as exc:
        logger.error("audit database error: %s", type(exc).__name__)
        raise AuditUnavailable(f"audit database unavailable: {type(exc).__name__}") from exc


class AuditStore:
    """Append-only audit trail plus the small mutable tables auth needs.

    Open it with :meth:`open`; it is thread-safe (one pooled engine).
    """

    def __init__(self, engine: Engine, replay_engine: Engine | None = None) -> None:
        self.engine = engine
        self.replay_engine = replay_engine or engine
        self._writer = BatchWriter(
            engine,
            [schema.audit_events, schema.audit_cards, schema.explanations, schema.imaging_results],
        )
        self._committer = GroupCommitter(self._write_rows)
        # Token ids from concurrent calls share one (non-durable) commit as well.
        self._replay_writer = BatchWriter(self.replay_engine, [schema.jwt_replay])
        self._replay_committer = GroupCommitter(self._write_jtis, name="jti-commit")
        self._last_prune = 0.0
        self._prune_lock = threading.Lock()

    @classmethod
    def open(cls, database_url: str, *, migrate: bool = True, **engine_kwargs: Any) -> AuditStore:
        """Connect to ``database_url`` and bring its schema up to date.

        Args:
            database_url: SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
            migrate: apply shipped Alembic migrations (default). When False, refuse a
                database that is not already at the shipped head.
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
        # jti on disk first. Answers without a durable commit after authentication
        # (discovery; 4xx for a bad feedback or cxr-triage body; 503 when the audit
        # commit failed) may lose their jti in a power cut, not in a process crash;
        # a copy of that token (5 min + 60 s lifetime at most) could then be used once
        # more, but that first answer gave nothing beyond the discovery document, so
        # a token still gets advice, data or a write at most once. A new JWT route
        # that returns data or stores anything must commit durably before answering.
        return cls(engine, _engine.make_engine(database_url, durable=False, **engine_kwargs))

    def close(self) -> None:
        """Commit queued rows, then release pooled connections."""
        self._committer.close()
        self._replay_committer.close()
        self._writer.close()
        self._replay_writer.close()
        self.engine.dispose()
        if self.replay_engine is not self.engine:
            self.replay_engine.dispose()

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
        for row in rows:
            values = row.model_dump()
            values["created"] = _utc(row.created)
            events.append(values)
            cards.extend({"card_uuid": c, "request_id": row.request_id} for c in row.card_ids)
            if row.explanation is not None:
                explanations.append(row.explanation.model_dump())
            if row.imaging_result is not None:
                imaging.append(row.imaging_result.model_dump() | {"request_id": row.request_id})

        # One transaction: explanations and imaging results cost no second commit (fsync).
        _write(
            self._writer,
            {
                "audit_events": events,
                "audit_cards": cards,
                "explanations": explanations,
                "imaging_results": imaging,
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
    ) -> Iterator[AuditRecord]:
        """Like :meth:`rows` but fetched ``chunk`` rows at a time (for large exports)."""
        table = schema.audit_events
        last_id = 0
        while True:
            query = self._rows_query(since, until, None).where(table.c.id > last_id).limit(chunk)
            result = self._fetch_all(query)
            for found in result:
                yield self._audit_record(found)
            if len(result) < chunk:
                return
            last_id = result[-1]["id"]

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
            query = query.where(table.c.created >= _utc(since))
        if until is not None:
            query = query.where(table.c.created < _utc(until))
        if request_id is not None:
            query = query.where(table.c.request_id == request_id)
        return query

    @staticmethod
    def _audit_record(found: Any) -> AuditRecord:
        values = {k: v for k, v in found.items() if k != "id"}
        values["created"] = _utc(values["created"])
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

    def card_shown(self, card_uuid: str) -> CardShown | None:
        """The service and caller a card was answered to (None if no answer carried it)."""
        cards, events = schema.audit_cards, schema.audit_events
        query = (
            select(events.c.service_id, events.c.caller_iss, events.c.caller_tenant)
            .join(cards, cards.c.request_id == events.c.request_id)
            .where(cards.c.card_uuid == card_uuid)
        )
        found = self._run(lambda c: c.execute(query).one_or_none(), read=True)
        return None if found is None else CardShown(*found)

    # -- explanations and shared secrets ----------------------------------------------

    def explanation(self, card_uuid: str) -> ExplanationRecord | None:
        """The stored explanation of card ``card_uuid``, expired or not (None if unknown).

        Written with the card's audit row (:attr:`AuditRecord.explanation`); rows past
        ``expires`` are purged at most once a minute, from here and from the JWT checks.
        """
        self._maybe_prune()
        table = schema.explanations
        query = select(table).where(table.c.card_uuid == card_uuid)
        found = self._run(lambda c: c.execute(query).mappings().one_or_none(), read=True)
        if found is None:
            return None
        values = dict(found)
        values["created"], values["expires"] = _utc(found["created"]), _utc(found["expires"])
        return ExplanationRecord.model_validate(values)

    def prune_explanations(self, now: datetime | None = None) -> int:
        """Delete explanations that expired before ``now``; returns how many."""
        table = schema.explanations
        query = delete(table).where(table.c.expires < _utc(now or datetime.now(UTC)))
        # Not durable on its own: a purge lost in a power cut is simply done again.
        return int(self._run(lambda c: c.execute(query).rowcount, engine=self.replay_engine))

    def service_secret(self, name: str) -> str:
        """The shared secret ``name``, created (256 random bits) by the first caller.

        Every worker and replica on this database gets the same value: concurrent
        creators race on the primary key and all read back the winner's. It is stored
        in the clear, so anyone who can read the database knows it: only for dev mode
        and the demo (the link key, :mod:`serving.ui.links`); a deployment configures
        its keys outside the database.
        """
        table = schema.service_secrets
        query = select(table.c.value).where(table.c.name == name)
        found: str | None = self._run(lambda c: c.execute(query).scalar_one_or_none(), read=True)
        if found is not None:
            return found
        values = {"name": name, "value": secrets.token_hex(32), "created": datetime.now(UTC)}
        with contextlib.suppress(IntegrityError):  # another process created it first
            self._run(lambda c: c.execute(insert(table), values))
        value: str = self._run(lambda c: c.execute(query).scalar_one(), read=True)
        return value

    # -- feedback ---------------------------------------------------------------------

    def record_feedback(self, fb: FeedbackRecord) -> None:
        """Append one feedback entry and commit before returning.

        When ``fb.request_id`` is None it is filled from the card index.

        Raises:
            AuditUnavailable: the entry could not be committed.
        """
        reason = fb.override_reason or OverrideReason()
        values = {
            "card_uuid": fb.card_uuid,
            "request_id": fb.request_id,
            "service_id": fb.service_id,
            "outcome": fb.outcome,
            "accepted_suggestions": list(fb.accepted_suggestions),
            "override_system": reason.system,
            "override_code": reason.code,
            "override_display": reason.display,
            "comment": fb.comment,
            "outcome_timestamp": _utc_or_none(fb.outcome_timestamp),
            "caller_iss": fb.caller_iss,
            "caller_sub": fb.caller_sub,
            "caller_tenant": fb.caller_tenant,
            "created": _utc(fb.created),
        }

        def work(connection: Any) -> None:
            if values["request_id"] is None:
                cards = schema.audit_cards
                values["request_id"] = connection.execute(
                    select(cards.c.request_id).where(cards.c.card_uuid == fb.card_uuid)
                ).scalar_one_or_none()
            connection.execute(insert(schema.feedback), values)

        self._run(work)

    def feedback(
        self, *, since: datetime | None = None, card_uuid: str | None = None
    ) -> list[FeedbackRecord]:
        """Feedback entries in the order they were written, optionally filtered."""
        table = schema.feedback
        query = select(table).order_by(table.c.id)
        if since is not None:
            query = query.where(table.c.created >= _utc(since))
        if card_uuid is not None:
            query = query.where(table.c.card_uuid == card_uuid)
        result = self._run(lambda c: c.execute(query).mappings().all(), read=True)
        out = []
        for found in result:
            has_reason = any(found[k] is not None for k in ("override_system", "override_code"))
            out.append(
                FeedbackRecord(
                    card_uuid=found["card_uuid"],
                    request_id=found["request_id"],
                    service_id=found["service_id"],
                    outcome=found["outcome"],
                    accepted_suggestions=list(found["accepted_suggestions"]),
                    override_reason=OverrideReason(
                        system=found["override_system"],
                        code=found["override_code"],
                        display=found["override_display"],
                    )
                    if has_reason
                    else None,
                    comment=found["comment"],
                    outcome_timestamp=_utc_or_none(found["outcome_timestamp"]),
                    caller_iss=found["caller_iss"],
                    caller_sub=found["caller_sub"],
                    caller_tenant=found["caller_tenant"],
                    created=_utc(found["created"]),
                )
            )
        return out

    # -- API keys ---------------------------------------------------------------------

    def create_api_key(self, tenant: str, name: str) -> tuple[ApiKeyInfo, str]:
        """Mint a key for ``tenant``; only its sha256 is stored.

        Returns:
            The key's listing and the full key (``tonle_<id>_<secret>``), shown once.
        """
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        created = datetime.now(UTC)
        values = {
            "key_id": key_id,
            "tenant": tenant,
            "name": name,
            "secret_sha256": _secret_hash(secret),
            "created": created,
            "revoked": None,
        }
        self._run(lambda c: c.execute(insert(schema.api_keys), values))
        info = ApiKeyInfo(key_id=key_id, tenant=tenant, name=name, created=created)
        return info, f"{API_KEY_PREFIX}_{key_id}_{secret}"

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyInfo]:
        """Every key (revoked ones included), never with secrets or hashes."""
        table = schema.api_keys
        query = select(table).order_by(table.c.created)
        if tenant is not None:
            query = query.where(table.c.tenant == tenant)
        result = self._run(lambda c: c.execute(query).mappings().all(), read=True)
        return [
            ApiKeyInfo(
                key_id=r["key_id"],
                tenant=r["tenant"],
                name=r["name"],
                created=_utc(r["created"]),
                revoked=_utc_or_none(r["revoked"]),
            )
            for r in result
        ]

    def revoke_api_key(self, key_id: str) -> bool:
        """Revoke a key at once. Returns False if no active key has that id."""
        table = schema.api_keys
        query = (
            update(table)
            .where(table.c.key_id == key_id, table.c.revoked.is_(None))
            .values(revoked=datetime.now(UTC))
        )
        return bool(self._run(lambda c: c.execute(query).rowcount) == 1)

    def check_api_key(self, key: str) -> ApiKeyInfo | None:
        """The active key matching ``key`` (constant-time secret comparison), else None."""
        prefix, _, rest = key.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != API_KEY_PREFIX or not key_id or not secret or len(key_id) > 32:
            return None
        table = schema.api_keys
        query = select(table).where(table.c.key_id == key_id)
        found = self._run(lambda c: c.execute(query).mappings().one_or_none(), read=True)
        expected = found["secret_sha256"] if found is not None else "0" * 64
        matches = hmac.compare_digest(expected, _secret_hash(secret))
        if found is None or not matches or found["revoked"] is not None:
            return None
        return ApiKeyInfo(
            key_id=found["key_id"],
            tenant=found["tenant"],
            name=found["name"],
            created=_utc(found["created"]),
        )

    # -- JWT replay store -------------------------------------------------------------

    def remember_jti(self, issuer: str, jti: str, expires: datetime) -> bool:
        """Atomically record a token id; False if ``(issuer, jti)`` was seen before.

        Entries are kept until ``expires`` (the token's ``exp`` plus clock skew) and
        then pruned, at most once a minute.

        The insert is atomic (primary key) and survives a process crash at once, but
        is not flushed to disk on its own: it reaches disk with the next durable commit
        on the same WAL, which every call answering with advice, "no advice" or stored
        feedback makes (its audit row) before its response; one fsync per call is saved.
        A power loss can therefore only forget token ids of calls that were not answered
        or were answered with nothing but an error or the discovery document (see the
        reasoning in :meth:`open`). Ids from concurrent calls are
        inserted in one transaction (a batch holding a repeated id is retried row by
        row, so exactly one of the copies is accepted).

        Raises:
            AuditUnavailable: the store cannot be reached (the caller must refuse).
        """
        try:
            self._replay_committer.commit(_jti_row(issuer, jti, expires))
        except IntegrityError:
            return False
        return True

    async def remember_jti_async(self, issuer: str, jti: str, expires: datetime) -> bool:
        """:meth:`remember_jti` for async handlers, without holding a worker thread."""
        try:
            await self._replay_committer.commit_async(_jti_row(issuer, jti, expires))
        except IntegrityError:
            return False
        return True

    def _write_jtis(self, rows: list[dict[str, Any]]) -> None:
        self._maybe_prune()
        _write(self._replay_writer, {"jwt_replay": rows})

    def prune_replay(self, now: datetime | None = None) -> int:
        """Delete replay entries that expired before ``now``; returns how many."""
        table = schema.jwt_replay
        query = delete(table).where(table.c.expires < _utc(now or datetime.now(UTC)))
        return int(self._run(lambda c: c.execute(query).rowcount, engine=self.replay_engine))

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < _PRUNE_EVERY_S or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._last_prune = now
            self.prune_replay(datetime.now(UTC) - timedelta(seconds=1))
            self.prune_explanations()
        finally:
            self._prune_lock.release()
