"""SIGKILL at random moments while audit rows are written: no acknowledged row is lost.

The negative control acknowledges rows before committing them; the same harness must
catch the loss, which shows the check can fail.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serving.audit import AuditStore
from tests.serving.db_fixtures import postgres_database

ROOT = Path(__file__).resolve().parents[2]


def _kill_loop(database_url: str, mode: str, kills: int, seed: int) -> tuple[set[str], set[str]]:
    """Run the writer ``kills`` times, SIGKILL each at a random moment.

    Returns:
        (acknowledged request ids, request ids found in the store afterwards).
    """
    rng = random.Random(seed)
    acked: set[str] = set()
    for attempt in range(kills):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.serving.crash_writer", database_url, f"k{attempt}", mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(child.stdout,), daemon=True)
        reader.start()
        time.sleep(rng.uniform(0.15, 0.5))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        reader.join(timeout=10)
        child.stdout.close()
        acked |= {line.split()[1] for line in lines if line.startswith("ok ")}
    store = AuditStore.open(database_url)
    stored = {row.request_id for row in store.rows()}
    if store.dialect == "sqlite":
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    store.close()
    return acked, stored


@pytest.mark.slow
def test_sigkill_never_loses_an_acknowledged_row_sqlite(tmp_path: Path) -> None:
    acked, stored = _kill_loop(f"sqlite:///{tmp_path / 'crash.db'}", "commit-then-ack", 3, 1)
    assert len(acked) > 20  # the writer really ran
    assert acked <= stored


@pytest.mark.slow
def test_sigkill_never_loses_an_acknowledged_row_postgres() -> None:
    with postgres_database() as url:
        acked, stored = _kill_loop(url, "commit-then-ack", 1, 2)
    assert len(acked) > 5
    assert acked <= stored


@pytest.mark.slow
def test_negative_control_ack_before_commit_is_caught(tmp_path: Path) -> None:
    acked, stored = _kill_loop(f"sqlite:///{tmp_path / 'neg.db'}", "ack-then-commit", 2, 3)
    assert acked - stored, "the harness failed to detect rows acknowledged but never stored"
