"""Group commit: audit rows written by concurrent requests share one durable commit.

A durable commit costs one fsync (milliseconds on ordinary disks) and SQLite has no
group commit of its own, so one commit per request caps throughput at 1/fsync and
queues everything behind it. Here a single committer thread takes every row that is
waiting, writes them in one transaction and wakes each caller only after that commit
returned: each caller still gets "committed before returning", at one fsync per batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy.exc import IntegrityError

__all__ = ["GroupCommitter"]

logger = logging.getLogger(__name__)

_MAX_BATCH = 256
_STOP = object()

# write(items) commits all items in one transaction or raises.
Writer = Callable[[list[Any]], None]


class GroupCommitter:
    """Commits submitted items in batches on one background thread.

    Args:
        write: commits a list of items in one transaction (raises on failure).
        name: thread name, for debugging.
    """

    def __init__(self, write: Writer, name: str = "audit-commit") -> None:
        self._write = write
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: Any) -> Future[None]:
        """Queue ``item``; the future completes once it is committed (or failed)."""
        future: Future[None] = Future()
        self._ensure_thread()
        self._queue.put((item, future))
        return future

    def commit(self, item: Any) -> None:
        """Queue ``item`` and block until it is committed; re-raises the write's error."""
        self.submit(item).result()

    async def commit_async(self, item: Any) -> None:
        """Like :meth:`commit`, awaited without tying up a worker thread."""
        await asyncio.wrap_future(self.submit(item))

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            stop = first is _STOP
            batch = [] if stop else [first]
            while len(batch) < _MAX_BATCH:
                try:
                    extra = self._queue.get_nowait()
                except queue.Empty:
                    break
                if extra is _STOP:
                    stop = True
                    break
                batch.append(extra)
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Any, Future[None]]]) -> None:
        try:
            self._write([item for item, _ in batch])
        except IntegrityError as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            # One bad row (e.g. a duplicate id) must not fail its neighbours.
            for entry in batch:
                self._commit([entry])
            return
        except BaseException as exc:  # every caller learns its row was not committed
            logger.error("group commit of %d row(s) failed: %s", len(batch), type(exc).__name__)
            for _, future in batch:
                future.set_exception(exc)
            return
        for _, future in batch:
            future.set_result(None)
