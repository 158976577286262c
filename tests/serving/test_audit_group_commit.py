"""Group commit: concurrent rows share a commit; each caller returns only after it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from serving.audit import AuditRecord, AuditStore, AuditUnavailable, DuplicateRequest
from serving.audit.committer import GroupCommitter


def _row(request_id: str) -> AuditRecord:
    return AuditRecord(
        request_id=request_id,
        service_id="ncd-cvd-risk",
        card_ids=[f"{request_id}-card"],
        outcome="advice",
        latency_ms=1.0,
    )


def test_waiting_items_share_one_commit_and_callers_wait_for_it() -> None:
    batches: list[list[int]] = []
    first_started = threading.Event()
    release = threading.Event()

    def write(items: list[int]) -> None:
        if not batches:
            first_started.set()
            release.wait(5)
        batches.append(list(items))

    committer = GroupCommitter(write)
    first = committer.submit(0)
    assert first_started.wait(5)
    later = [committer.submit(i) for i in range(1, 21)]
    time.sleep(0.05)
    assert not any(f.done() for f in [first, *later])  # nobody returns before the commit
    release.set()
    for future in [first, *later]:
        future.result(5)
    committer.close()
    assert batches == [[0], list(range(1, 21))]


def test_a_bad_item_fails_alone() -> None:
    release = threading.Event()
    started = threading.Event()
    batches: list[list[str]] = []

    def write(items: list[str]) -> None:
        batches.append(list(items))
        if items == ["blocker"]:
            started.set()
            release.wait(5)  # the others queue up meanwhile and form one batch
        if "dup" in items:
            raise IntegrityError("insert", None, Exception("unique"))

    committer = GroupCommitter(write)
    blocker = committer.submit("blocker")
    assert started.wait(5)
    futures = {name: committer.submit(name) for name in ["a", "dup", "b"]}
    release.set()
    blocker.result(5)
    assert futures["a"].result(5) is None
    assert futures["b"].result(5) is None
    with pytest.raises(IntegrityError):
        futures["dup"].result(5)
    committer.close()
    assert batches == [["blocker"], ["a", "dup", "b"], ["a"], ["dup"], ["b"]]


def test_concurrent_records_all_committed_in_fewer_transactions(tmp_path: Path) -> None:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'g.db'}")
    commits = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    barrier = threading.Barrier(40)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            store.record(_row(f"r{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 40
    assert len(commits) < 40
    with pytest.raises(DuplicateRequest):
        store.record(_row("r7"))
    store.close()


def test_record_async(tmp_path: Path) -> None:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'a.db'}")

    async def go() -> None:
        await asyncio.gather(*(store.record_async(_row(f"a{i}")) for i in range(10)))
        with pytest.raises(DuplicateRequest):
            await store.record_async(_row("a3"))

    asyncio.run(go())
    assert store.count() == 10
    store.close()


def test_database_failure_reaches_every_waiting_caller(tmp_path: Path) -> None:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'f.db'}")
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE audit_cards")
    futures = [store._committer.submit(_row(f"x{i}")) for i in range(5)]
    for future in futures:
        with pytest.raises(AuditUnavailable):
            future.result(5)
    store.close()
