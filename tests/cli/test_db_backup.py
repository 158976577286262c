"""``tonle db backup`` and ``tonle db restore``: a backup taken while the database is in
use restores into a new database that reads back the same audit trail, append-only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
from typer.testing import CliRunner

from cli import app
from serving.audit import AuditRecord, AuditStore
from tests.serving.db_fixtures import postgres_database

runner = CliRunner()


def _row(request_id: str) -> AuditRecord:
    return AuditRecord.model_validate(
        {
            "request_id": request_id,
            "hook_instance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "service_id": "ncd-cvd-risk",
            "card_ids": [f"{request_id}-c1"],
            "caller_iss": "https://ehr.example.org",
            "caller_sub": "client-1",
            "caller_tenant": "site-a",
            "model_name": "cvd-risk",
            "model_version": "1.2.0",
            "model_sha256": "a" * 64,
            "input_sha256": "b" * 64,
            "outcome": "advice",
            "patient_ref": "Patient/123",
            "latency_ms": 3.25,
            "created": datetime(2026, 1, 2, 8, 0, tzinfo=UTC),
        }
    )


@contextmanager
def _sqlite(tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'restored' / 'r.db'}"


@contextmanager
def _postgres(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with postgres_database("tonle_backup") as live, postgres_database("tonle_restore") as new:
        yield live, new


BACKENDS = {"sqlite": _sqlite, "postgresql": _postgres}


@pytest.mark.parametrize("backend", BACKENDS)
def test_backup_then_restore_reads_back_the_same_rows(backend: str, tmp_path: Path) -> None:
    with BACKENDS[backend](tmp_path) as (live_url, restored_url):
        live = AuditStore.open(live_url)  # open, as a running service holds it
        for n in range(3):
            live.record(_row(f"r-{n}"))
        key_info, key = live.create_api_key("site-a", "lab")
        backup = tmp_path / "audit.backup"

        backed_up = runner.invoke(app, ["db", "backup", str(backup), "--database-url", live_url])
        live.record(_row("r-after-backup"))  # not in the backup
        restored = runner.invoke(
            app, ["db", "restore", str(backup), "--database-url", restored_url]
        )
        live.close()

        assert backed_up.exit_code == 0, backed_up.output
        assert restored.exit_code == 0, restored.output
        assert "restored 3 audit row(s)" in restored.stdout
        store = AuditStore.open(restored_url)
        try:
            assert sorted(r.request_id for r in store.iter_rows()) == ["r-0", "r-1", "r-2"]
            assert store.rows(request_id="r-1")[0].card_ids == ["r-1-c1"]
            checked = store.check_api_key(key)
            assert checked is not None
            assert checked.key_id == key_info.key_id
            # Still append-only: the triggers came back with the tables.
            with pytest.raises(sqlalchemy.exc.DatabaseError), store.engine.begin() as c:
                c.execute(sqlalchemy.text("DELETE FROM audit_events"))
        finally:
            store.close()


def test_a_backup_never_overwrites_and_a_restore_needs_an_empty_target(
    tmp_path: Path,
) -> None:
    live_url = f"sqlite:///{tmp_path / 'live.db'}"
    AuditStore.open(live_url).close()
    existing = tmp_path / "exists.backup"
    existing.write_text("keep me")

    overwrite = runner.invoke(app, ["db", "backup", str(existing), "--database-url", live_url])
    backup = tmp_path / "ok.backup"
    runner.invoke(app, ["db", "backup", str(backup), "--database-url", live_url])
    onto_live = runner.invoke(app, ["db", "restore", str(backup), "--database-url", live_url])

    assert overwrite.exit_code == 4
    assert existing.read_text() == "keep me"
    assert onto_live.exit_code == 4


def test_restore_refuses_a_postgres_database_that_has_tables(tmp_path: Path) -> None:
    with postgres_database("tonle_restore") as target:
        AuditStore.open(target).close()
        backup = tmp_path / "a.backup"
        assert (
            runner.invoke(app, ["db", "backup", str(backup), "--database-url", target]).exit_code
            == 0
        )

        result = runner.invoke(app, ["db", "restore", str(backup), "--database-url", target])

    assert result.exit_code == 4
    assert "not empty" in result.output
