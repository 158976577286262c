"""The audit store against SQLite and the real PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DatabaseError

from serving.audit import (
    AuditRecord,
    AuditStore,
    AuditUnavailable,
    DuplicateRequest,
    FeedbackRecord,
    OverrideReason,
)
from serving.audit import engine as engine_module
from serving.audit.engine import current_revisions, grant_service_role, head_revisions
from serving.audit.records import OPERATOR_SERVICES
from serving.imaging.results import Analysed
from tests.serving.db_fixtures import postgres_schema
from tests.serving.feedback_fixtures import store_feedback
from tests.serving.imaging.results_fixtures import commit_read, make_result, with_copy
from tests.serving.operator_fixtures import record_scrapes


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    with postgres_schema(pg_database) as url:
        yield url


@pytest.fixture
def store(db_url: str) -> Iterator[AuditStore]:
    opened = AuditStore.open(db_url)
    yield opened
    opened.close()


def _row(request_id: str = "req-1", **changes: object) -> AuditRecord:
    values: dict[str, object] = {
        "request_id": request_id,
        "hook_instance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "service_id": "ncd-cvd-risk",
        "card_ids": [f"{request_id}-card"],
        "caller_iss": "https://ehr.example.org",
        "caller_sub": "client-1",
        "caller_tenant": "site-a",
        "model_name": "cvd-risk",
        "model_version": "1.0.0",
        "model_sha256": "a" * 64,
        "input_sha256": "b" * 64,
        "outcome": "advice",
        "patient_ref": "Patient/123",
        "latency_ms": 4.5,
    }
    values.update(changes)
    return AuditRecord.model_validate(values)


def test_record_round_trips_and_indexes_cards(store: AuditStore) -> None:
    first = _row("req-1", created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    second = _row("req-2", outcome="no-advice", reason="stale-data", card_ids=[])
    store.record(first)
    store.record(second)

    rows = store.rows()
    assert rows == [first, second.model_copy(update={"created": rows[1].created})]
    assert rows[1].created.tzinfo is not None
    assert store.count() == 2
    assert store.request_for_card("req-1-card") == "req-1"
    assert store.request_for_card("nope") is None
    assert [r.request_id for r in store.rows(since=datetime(2026, 6, 1, tzinfo=UTC))] == ["req-2"]
    assert [r.request_id for r in store.rows(request_id="req-1")] == ["req-1"]
    assert list(store.iter_rows(chunk=1)) == rows
    assert [r.request_id for r in store.iter_rows(until=datetime(2026, 6, 1, tzinfo=UTC))] == [
        "req-1"
    ]


def test_duplicate_request_id_is_refused(store: AuditStore) -> None:
    store.record(_row("dup"))
    with pytest.raises(DuplicateRequest):
        store.record(_row("dup", card_ids=["other-card"]))
    assert store.count() == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET outcome = 'error'",
        "DELETE FROM audit_events",
        "UPDATE audit_cards SET request_id = 'x'",
        "DELETE FROM audit_cards",
        "UPDATE feedback SET outcome = 'accepted'",
        "DELETE FROM feedback",
    ],
)
def test_audit_tables_are_append_only(store: AuditStore, statement: str) -> None:
    store.record(_row("kept", card_ids=["kept-card"]))
    said = store_feedback(
        store,
        FeedbackRecord(card_uuid="kept-card", service_id="ncd-cvd-risk", outcome="overridden"),
    )
    with pytest.raises(DatabaseError, match="append-only"), store.engine.begin() as connection:
        connection.execute(text(statement))
    assert [r.request_id for r in store.rows()] == ["kept", said]
    assert len(store.feedback()) == 1


@pytest.mark.parametrize(
    "statement",
    [
        # SQLite's REPLACE deletes the clashing row without firing DELETE triggers.
        "INSERT OR REPLACE INTO audit_events (id, request_id, service_id, card_ids, outcome, "
        "latency_ms, created) SELECT id, request_id, 'forged', '[]', 'advice', 0, created "
        "FROM audit_events",
        "REPLACE INTO audit_events (id, request_id, service_id, card_ids, outcome, latency_ms, "
        "created) SELECT id + 100, request_id, 'forged', '[]', 'advice', 0, created "
        "FROM audit_events",
        "INSERT OR REPLACE INTO audit_cards (card_uuid, request_id) VALUES ('card-k', 'forged')",
        "INSERT OR REPLACE INTO feedback (id, card_uuid, service_id, outcome, "
        "accepted_suggestions, created) SELECT id, card_uuid, 'forged', 'accepted', '[]', "
        "created FROM feedback",
    ],
)
def test_sqlite_replace_cannot_rewrite_a_row(tmp_path: Path, statement: str) -> None:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}")
    store.record(_row("kept", card_ids=["card-k"]))
    said = store_feedback(
        store, FeedbackRecord(card_uuid="card-k", service_id="ncd-cvd-risk", outcome="overridden")
    )
    with pytest.raises(DatabaseError, match="append-only"), store.engine.begin() as connection:
        connection.execute(text(statement))
    assert [(r.request_id, r.service_id) for r in store.rows()] == [
        ("kept", _row("k").service_id),
        (said, "feedback:ncd-cvd-risk"),
    ]
    assert store.request_for_card("card-k") == "kept"
    assert [(f.service_id, f.outcome) for f in store.feedback()] == [("ncd-cvd-risk", "overridden")]
    # An ordinary new row is still appended.
    store.record(_row("next"))
    assert store.count() == 3
    store.close()


def test_postgres_upsert_cannot_rewrite_a_row(pg_url: str) -> None:
    store = AuditStore.open(pg_url)
    store.record(_row("kept"))
    upsert = (
        "INSERT INTO audit_events (request_id, service_id, card_ids, outcome, latency_ms, "
        "created) SELECT request_id, 'forged', '[]', 'advice', 0, created FROM audit_events "
        "ON CONFLICT (request_id) DO UPDATE SET service_id = 'forged'"
    )
    with pytest.raises(DatabaseError, match="append-only"), store.engine.begin() as connection:
        connection.execute(text(upsert))
    assert [r.service_id for r in store.rows()] == [_row("k").service_id]
    store.close()


def test_card_shown_names_the_service_and_caller(store: AuditStore) -> None:
    store.record(_row("req-s", card_ids=["card-s"]))
    shown = store.card_shown("card-s")
    assert shown is not None
    assert (shown.service_id, shown.caller_tenant) == (
        _row("x").service_id,
        _row("x").caller_tenant,
    )
    assert store.card_shown("never-shown") is None


def test_truncate_refused_on_postgres(pg_url: str) -> None:
    store = AuditStore.open(pg_url)
    store.record(_row("kept"))
    with pytest.raises(DatabaseError, match="append-only"), store.engine.begin() as connection:
        connection.execute(text("TRUNCATE audit_events"))
    assert store.count() == 1
    store.close()


def test_feedback_links_to_request_through_card(store: AuditStore) -> None:
    store.record(_row("req-9", card_ids=["card-a", "card-b"]))
    entry = FeedbackRecord(
        card_uuid="card-b",
        service_id="ncd-cvd-risk",
        outcome="overridden",
        override_reason=OverrideReason(
            system="http://example.org/override", code="patient-declined", display="Declined"
        ),
        comment="discussed",
        outcome_timestamp=datetime(2026, 3, 1, 12, tzinfo=UTC),
        caller_iss="https://ehr.example.org",
    )
    store_feedback(
        store,
        entry,
        FeedbackRecord(
            card_uuid="card-a",
            service_id="ncd-cvd-risk",
            outcome="accepted",
            accepted_suggestions=["sugg-1"],
        ),
    )
    got = store.feedback()
    assert got[0].request_id == "req-9"
    assert got[0].override_reason == entry.override_reason
    assert got[0].outcome_timestamp == entry.outcome_timestamp
    assert got[1].accepted_suggestions == ["sugg-1"]
    assert got[1].override_reason is None
    assert [f.outcome for f in store.feedback(card_uuid="card-a")] == ["accepted"]


def test_feedback_commits_with_its_audit_row_or_not_at_all(store: AuditStore) -> None:
    """Feedback carried by an audit row is written in that row's transaction: a row that
    cannot be stored (its request id taken) takes its feedback with it."""
    store.record(_row("req-shown", card_ids=["card-f"]))
    shown = store.card_shown("card-f")
    assert shown is not None
    assert shown.request_id == "req-shown"
    entry = FeedbackRecord(
        card_uuid="card-f",
        request_id=shown.request_id,
        service_id="ncd-cvd-risk",
        outcome="accepted",
        accepted_suggestions=["sugg-1"],
        outcome_timestamp=datetime(2026, 3, 1, 12, tzinfo=UTC),
    )
    store.record(_row("req-fb", outcome="feedback", card_ids=[], feedback=[entry]))
    with pytest.raises(DuplicateRequest):
        store.record(_row("req-fb", outcome="feedback", card_ids=[], feedback=[entry]))
    got = store.feedback(card_uuid="card-f")
    assert [(f.request_id, f.accepted_suggestions) for f in got] == [("req-shown", ["sugg-1"])]
    assert got[0].outcome_timestamp == entry.outcome_timestamp
    (row,) = store.rows(request_id="req-fb")
    assert (row.outcome, row.card_ids, row.feedback) == ("feedback", [], [])


def test_api_keys_hashed_checked_and_revoked(store: AuditStore) -> None:
    info, key = store.create_api_key("site-a", "lab system")
    other_info, other = store.create_api_key("site-b", "pharmacy")

    assert store.check_api_key(key) == info
    assert store.check_api_key(other) == other_info
    assert store.check_api_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.check_api_key("tonle_nokey_secret") is None
    assert store.check_api_key("garbage") is None
    with store.engine.connect() as connection:
        stored = connection.execute(text("SELECT secret_sha256 FROM api_keys")).scalars().all()
    # The secret is everything after "tonle_<id>_" (token_urlsafe may itself hold "_":
    # splitting on the last "_" left a fragment short enough to occur in a hash by chance).
    secrets = [k.split("_", 2)[2] for k in (key, other)]
    assert all(len(h) == 64 and not any(s in h for s in secrets) for h in stored)

    assert store.revoke_api_key(info.key_id) is True
    assert store.revoke_api_key(info.key_id) is False
    assert store.check_api_key(key) is None
    assert store.check_api_key(other) == other_info
    listed = {k.key_id: k for k in store.list_api_keys()}
    assert listed[info.key_id].revoked is not None
    assert [k.key_id for k in store.list_api_keys(tenant="site-b")] == [other_info.key_id]


def test_jti_accepted_exactly_once_under_50_parallel_copies(store: AuditStore) -> None:
    expires = datetime.now(UTC) + timedelta(minutes=5)
    results: list[bool] = []
    barrier = threading.Barrier(50)

    def attempt() -> None:
        barrier.wait()
        results.append(store.remember_jti("https://ehr.example.org", "jti-1", expires))

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 49 + [True]
    # Same jti from another issuer is a different token.
    assert store.remember_jti("https://other.example.org", "jti-1", expires) is True


def test_jti_remembered_across_reopen_and_pruned_after_expiry(db_url: str) -> None:
    first = AuditStore.open(db_url)
    now = datetime.now(UTC)
    assert first.remember_jti("iss", "live", now + timedelta(minutes=5))
    assert first.remember_jti("iss", "old", now - timedelta(minutes=1))
    assert first.prune_replay(now) == 1
    assert first.remember_jti("iss", "old", now + timedelta(minutes=5)) is True
    first.close()

    second = AuditStore.open(db_url)
    assert second.remember_jti("iss", "live", now + timedelta(minutes=5)) is False
    assert second.remember_jti("iss", "old", now + timedelta(minutes=5)) is False
    second.close()


def test_sqlite_every_connection_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'a.db'}")
    connections = [store.engine.raw_connection() for _ in range(3)]
    try:
        for connection in connections:
            cursor = connection.cursor()
            assert cursor.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert cursor.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
            assert cursor.execute("PRAGMA busy_timeout").fetchone() == (10_000,)
            cursor.close()
    finally:
        for connection in connections:
            connection.close()
        store.close()


def test_postgres_connections_commit_synchronously(pg_url: str) -> None:
    store = AuditStore.open(pg_url)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    # The replay store's commits ride on the next audit commit (see remember_jti).
    with store.replay_engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    store.close()


def test_sqlite_replay_inserts_reach_disk_with_the_next_audit_commit(tmp_path: Path) -> None:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    raw = store.replay_engine.raw_connection()
    try:
        assert raw.cursor().execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    finally:
        raw.close()
    # Same file, same WAL: the audit connection sees the jti and its commit syncs it.
    assert store.remember_jti("iss", "j", datetime.now(UTC) + timedelta(minutes=1))
    store.record(_row("after-jti"))
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM jwt_replay").scalar() == 1
    store.close()


def test_migrations_reach_head_and_are_idempotent(db_url: str) -> None:
    AuditStore.open(db_url).close()
    store = AuditStore.open(db_url)
    assert head_revisions()
    assert current_revisions(store.engine) == head_revisions()
    store.close()
    AuditStore.open(db_url, migrate=False).close()


def test_unmigrated_database_refused_without_migrate(tmp_path: Path) -> None:
    with pytest.raises(AuditUnavailable, match="tonle db upgrade"):
        AuditStore.open(f"sqlite:///{tmp_path / 'empty.db'}", migrate=False)


def test_unreachable_database_is_audit_unavailable() -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2"
    with pytest.raises(AuditUnavailable):
        AuditStore.open(url)


def test_write_failure_after_open_is_audit_unavailable(tmp_path: Path) -> None:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'gone.db'}")
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE audit_cards")
    with pytest.raises(AuditUnavailable):
        store.record(_row("lost"))
    assert store.count() == 0  # the audit row rolled back with its card index
    store.close()


def test_audit_writer_replaces_a_connection_the_server_dropped(pg_url: str) -> None:
    store = AuditStore.open(pg_url)
    store.record(_row("before"))  # the writer now keeps a connection between batches
    with store.engine.connect() as connection:
        killed = connection.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).all()
    assert killed  # the writer's connection was among them
    store.record(_row("after"))  # retried on a fresh connection, not a 503
    assert [r.request_id for r in store.rows()] == ["before", "after"]
    store.close()


def test_rows_of_cards_and_rows_without_the_operators(store: AuditStore) -> None:
    """The audit row of each card, found through the card index a few cards a query;
    the operators' reads left out by the query itself."""
    for i in range(5):
        store.record(_row(f"req-{i}", card_ids=[f"c{i}a", f"c{i}b"]))
    record_scrapes(store, 1000, datetime.now(UTC))
    store.record(_row("req-last"))
    found = store.rows_of_cards({"c0a", "c0b", "c3b", "c4a", "unknown"}, chunk=2)
    assert {card: row.request_id for card, row in found.items()} == {
        "c0a": "req-0", "c0b": "req-0", "c3b": "req-3", "c4a": "req-4"
    }  # fmt: skip
    assert found["c3b"] == store.rows(request_id="req-3")[0]
    users = store.iter_rows(chunk=4, exclude_services=OPERATOR_SERVICES)
    assert [r.request_id for r in users] == [*(f"req-{i}" for i in range(5)), "req-last"]
    assert sum(1 for _ in store.iter_rows()) == 1006


def test_failed_batch_rolls_back_and_the_next_one_commits(store: AuditStore) -> None:
    store.record(_row("first"))
    with pytest.raises(DuplicateRequest):
        store.record(_row("first"))
    store.record(_row("second"))
    assert [r.request_id for r in store.rows()] == ["first", "second"]


def test_postgres_service_role_can_append_but_not_alter(pg_url: str) -> None:
    owner = AuditStore.open(pg_url)
    owner.record(_row("by-owner"))
    commit_read(owner, Analysed(make_result(), with_copy()))  # a read with a reader's copy
    role = f"tonle_svc_{uuid.uuid4().hex[:8]}"
    with owner.engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
    try:
        grant_service_role(owner.engine, role)
        service_url = make_url(pg_url).set(username=role).render_as_string(False)
        service = AuditStore.open(service_url)
        try:
            service.record(_row("by-service"))
            assert service.remember_jti("iss", "j1", datetime.now(UTC) + timedelta(minutes=1))
            assert service.prune_replay() == 0
            # Retention empties reader's copies as the service role (UPDATE granted) ...
            assert service.prune_pixels(datetime.now(UTC) + timedelta(days=1)).copies == 1
            assert {"by-owner", "by-service"} <= {r.request_id for r in service.rows()}
            for statement in [
                "DELETE FROM audit_events",
                "DELETE FROM imaging_pixels",  # ... but never deletes or replaces them
                "UPDATE imaging_pixels SET data = 'x'",
                "ALTER TABLE audit_events DISABLE TRIGGER ALL",
                "TRUNCATE feedback",
                "INSERT INTO api_keys VALUES ('k', 't', 'n', 'h', now(), NULL)",
            ]:
                with pytest.raises(DatabaseError), service.engine.begin() as connection:
                    connection.exec_driver_sql(statement)
        finally:
            service.close()
    finally:
        with owner.engine.begin() as connection:
            connection.exec_driver_sql(f"DROP OWNED BY {role}")
            connection.exec_driver_sql(f"DROP ROLE {role}")
        owner.close()


def test_an_upgrade_gives_the_service_role_its_rights_on_new_tables(pg_url: str) -> None:
    """A role granted at the previous head (0005) stores and empties a reader's copy
    (table added by 0006) after `tonle db upgrade`, without being granted again; a role
    that was not a service role gets nothing."""
    engine = engine_module.make_engine(pg_url)
    engine_module.upgrade(engine, "0005_imaging_results")
    role, reporting = (f"tonle_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("svc", "rep"))
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        connection.exec_driver_sql(f"CREATE ROLE {reporting} LOGIN")
        connection.exec_driver_sql(f"GRANT SELECT ON audit_events TO {reporting}")
    try:
        grant_service_role(engine, role)
        engine_module.upgrade(engine)
        assert current_revisions(engine) == head_revisions()
        service_url = make_url(pg_url).set(username=role).render_as_string(False)
        service = AuditStore.open(service_url)
        try:
            commit_read(service, Analysed(make_result(), with_copy()))
            assert service.prune_pixels(datetime.now(UTC) + timedelta(days=1)).copies == 1
        finally:
            service.close()
        with engine.connect() as connection:
            rights = connection.execute(
                text("SELECT has_table_privilege(:role, 'imaging_pixels', 'SELECT')"),
                {"role": reporting},
            ).scalar_one()
        assert rights is False
    finally:
        with engine.begin() as connection:
            for name in (role, reporting):
                connection.exec_driver_sql(f"DROP OWNED BY {name}")
                connection.exec_driver_sql(f"DROP ROLE {name}")
        engine.dispose()


def test_grant_service_role_refuses_sqlite_and_odd_names(tmp_path: Path, pg_url: str) -> None:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'g.db'}")
    with pytest.raises(ValueError, match="PostgreSQL"):
        grant_service_role(store.engine, "tonle_service")
    store.close()
    pg = AuditStore.open(pg_url)
    with pytest.raises(ValueError, match="identifier"):
        grant_service_role(pg.engine, 'x"; DROP TABLE audit_events; --')
    pg.close()


_EXTRA_MIGRATION = """
import sqlalchemy as sa
from alembic import op

from serving.audit.migrations.append_only import make_append_only

revision = "{rev}"
down_revision = "0001_audit_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True))
    make_append_only("{table}")


def downgrade() -> None:
    op.drop_table("{table}")
"""


def test_tables_added_by_parallel_migrations_are_applied(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(
        engine_module.MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__")
    )
    for rev, table in [("0002_first", "first_rows"), ("0002_other", "other_rows")]:
        (migrations / "versions" / f"{rev}.py").write_text(
            _EXTRA_MIGRATION.format(rev=rev, table=table)
        )
    monkeypatch.setattr(engine_module, "MIGRATIONS_DIR", migrations)

    store = AuditStore.open(db_url)
    assert {"0002_first", "0002_other"} <= set(current_revisions(store.engine))
    assert current_revisions(store.engine) == head_revisions()  # every parallel head
    with store.engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO first_rows (id) VALUES (1)")
    with pytest.raises(DatabaseError, match="append-only"), store.engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM first_rows")
    store.close()


def test_workers_opening_a_new_database_at_once_all_succeed(db_url: str) -> None:
    stores: list[AuditStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait()
        try:
            stores.append(AuditStore.open(db_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {current_revisions(s.engine) for s in stores} == {head_revisions()}
    for store in stores:
        store.close()
