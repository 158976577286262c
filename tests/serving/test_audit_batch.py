"""Group commit of audit rows: every row committed before record() returns, batches
really form under concurrency, and one bad row never fails or hides the others."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.audit import AuditRecord, AuditStore, AuditUnavailable, DuplicateRequest
from serving.audit_batch import BatchingAudit


def _row(request_id: str | None = None) -> AuditRecord:
    return AuditRecord(
        request_id=request_id or uuid.uuid4().hex,
        service_id="ncd-cvd-risk",
        card_ids=[str(uuid.uuid4())],
        outcome="advice",
        latency_ms=1.0,
    )


@pytest.fixture
def batching(tmp_path: Path) -> Iterator[BatchingAudit]:
    audit = BatchingAudit(AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}"))
    yield audit
    audit.close()


def test_concurrent_rows_all_committed_in_fewer_transactions(batching: BatchingAudit) -> None:
    rows = [_row() for _ in range(200)]
    seen_after_return: list[bool] = []
    lock = threading.Lock()

    def worker(chunk: list[AuditRecord]) -> None:
        for row in chunk:
            batching.record(row)
            committed = batching.store.rows(request_id=row.request_id)
            with lock:
                seen_after_return.append(len(committed) == 1)

    threads = [threading.Thread(target=worker, args=(rows[i::20],)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(seen_after_return)
    assert len(seen_after_return) == 200
    assert batching.store.count() == 200
    assert batching.rows_committed == 200
    assert batching.batches < 200  # some rows shared a commit
    assert {r.request_id for r in batching.store.rows()} == {r.request_id for r in rows}
    card = rows[7].card_ids[0]
    assert batching.store.request_for_card(card) == rows[7].request_id


def test_duplicate_fails_alone(batching: BatchingAudit) -> None:
    first = _row("dup-1")
    batching.record(first)
    errors: dict[str, BaseException] = {}
    barrier = threading.Barrier(8)

    def worker(row: AuditRecord) -> None:
        barrier.wait()
        try:
            batching.record(row)
        except BaseException as exc:
            errors[row.request_id] = exc

    others = [_row() for _ in range(7)]
    threads = [threading.Thread(target=worker, args=(r,)) for r in [_row("dup-1"), *others]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(errors) == {"dup-1"}
    assert isinstance(errors["dup-1"], DuplicateRequest)
    for row in others:
        assert len(batching.store.rows(request_id=row.request_id)) == 1
    assert batching.store.count() == 8


def test_store_failure_reaches_the_caller(
    batching: BatchingAudit, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object) -> None:
        raise AuditUnavailable("audit database unavailable: OperationalError")

    monkeypatch.setattr(batching, "_write", down)
    monkeypatch.setattr(batching.store, "record", down)
    with pytest.raises(AuditUnavailable):
        batching.record(_row())
    monkeypatch.undo()
    assert batching.store.count() == 0
    batching.record(_row())  # recovers without a restart
    assert batching.store.count() == 1
