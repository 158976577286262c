"""API keys, the JWT replay store (token ids seen) and generated service secrets."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from serving.audit import schema
from serving.audit.committer import GroupCommitter
from serving.audit.records import ApiKeyInfo
from serving.audit.tables import Tables, utc, utc_or_none, write
from serving.audit.writer import BatchWriter

__all__ = ["API_KEY_PREFIX", "KeyTables"]

API_KEY_PREFIX = "tonle"


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _label(value: str, what: str) -> str:
    """A key's tenant or name: 1-128 printable characters, no surrounding spaces.

    An empty tenant would be no tenant: tenant-less callers' stored reads share ``""``.
    """
    if not value or value != value.strip() or len(value) > 128 or not value.isprintable():
        raise ValueError(
            f"the key's {what} must be 1-128 printable characters without surrounding spaces"
        )
    return value


def _jti_row(issuer: str, jti: str, expires: datetime) -> dict[str, Any]:
    return {"issuer": issuer, "jti": jti, "expires": utc(expires)}


class KeyTables(Tables):
    """What authentication keeps in the audit database (part of the audit store)."""

    def __init__(self, engine: Engine, replay_engine: Engine | None = None) -> None:
        super().__init__(engine, replay_engine)
        # Token ids from concurrent calls share one (non-durable) commit.
        self._replay_writer = BatchWriter(self.replay_engine, [schema.jwt_replay])
        self._replay_committer = GroupCommitter(self._write_jtis, name="jti-commit")

    def close(self) -> None:
        """Commit queued token ids, then stop the replay writer."""
        self._replay_committer.close()
        self._replay_writer.close()

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

    def create_api_key(self, tenant: str, name: str) -> tuple[ApiKeyInfo, str]:
        """Mint a key for ``tenant``; only its sha256 is stored.

        Returns:
            The key's listing and the full key (``tonle_<id>_<secret>``), shown once.

        Raises:
            ValueError: an empty, over-long or unprintable tenant or name.
        """
        tenant, name = _label(tenant, "tenant"), _label(name, "name")
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
                created=utc(r["created"]),
                revoked=utc_or_none(r["revoked"]),
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
            created=utc(found["created"]),
        )

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
        reasoning in :meth:`serving.audit.store.AuditStore.open`). Ids from concurrent calls are
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
        write(self._replay_writer, {"jwt_replay": rows})

    def prune_replay(self, now: datetime | None = None) -> int:
        """Delete replay entries that expired before ``now``; returns how many."""
        table = schema.jwt_replay
        query = delete(table).where(table.c.expires < utc(now or datetime.now(UTC)))
        return int(self._run(lambda c: c.execute(query).rowcount, engine=self.replay_engine))

    def _prune_expired(self) -> None:
        super()._prune_expired()
        self.prune_replay(datetime.now(UTC) - timedelta(seconds=1))
