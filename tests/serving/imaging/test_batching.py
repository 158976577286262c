"""Adaptive batching of the model call: concurrent requests share ONNX Runtime calls."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from typing import TypeVar

import numpy as np
import pytest

from models.registry import StoredModel
from serving.imaging.analysis import CannotAssess
from serving.imaging.batching import AdaptiveBatcher, Batched
from serving.imaging.runner import load_runner

T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    """Run ``coro`` on a fresh loop, then let the tasks it left (the batcher's) finish."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()

        async def drain() -> None:
            await asyncio.gather(*pending, return_exceptions=True)

        loop.run_until_complete(drain())
        loop.close()


class FakeRunner:
    """Answers each image with its own mean (so rows can be traced back), after a delay."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False, rows: int | None = None) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.rows = rows
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(batch))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("onnxruntime failed")
        means = batch.reshape(len(batch), -1).mean(axis=1)[: self.rows]
        probs = np.repeat(means[:, None], 5, axis=1)
        return probs, np.broadcast_to(means[:, None, None, None], (len(means), 5, 2, 2)).copy()


def _images(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 1, 4, 4), value, np.float32)


class SlowRunner:
    """Wraps a runner; each call costs a fixed 20 ms plus the real work."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(batch))
        time.sleep(0.02)
        return self.inner.predict(batch)  # type: ignore[attr-defined, no-any-return]


def test_concurrent_calls_are_batched_and_answers_unchanged(tiny_cxr: StoredModel) -> None:
    runner = SlowRunner(load_runner(tiny_cxr))
    rng = np.random.default_rng(0)
    images = [rng.random((1, 1, 64, 64), dtype=np.float32) for _ in range(24)]
    expected = [runner.inner.predict(image) for image in images]  # type: ignore[attr-defined]

    async def run() -> list[Batched]:
        batcher = AdaptiveBatcher(runner, max_batch_size=8, max_latency_ms=5000)
        try:
            return list(await asyncio.gather(*(batcher(image) for image in images)))
        finally:
            batcher.close()

    got = _run(run())
    for (probs, cams, _), (want_probs, want_cams) in zip(got, expected, strict=True):
        np.testing.assert_allclose(probs, want_probs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cams, want_cams, rtol=1e-5, atol=1e-5)
    assert max(runner.calls) > 1  # some calls carried several images
    assert max(runner.calls) <= 8
    assert sum(runner.calls) == 24


def test_each_caller_gets_its_own_rows_in_order() -> None:
    runner = FakeRunner(delay_s=0.01)
    sizes = [1, 2, 1, 3, 1, 1, 2, 1, 1, 1]

    async def run() -> list[Batched]:
        batcher = AdaptiveBatcher(runner, max_batch_size=4, max_latency_ms=5000)
        try:
            calls = [batcher(_images(i + 1, n)) for i, n in enumerate(sizes)]
            return list(await asyncio.gather(*calls))
        finally:
            batcher.close()

    got = _run(run())
    for i, ((probs, cams, batch_size), n) in enumerate(zip(got, sizes, strict=True)):
        assert n <= batch_size <= 4
        assert probs.shape == (n, 5)
        assert cams.shape == (n, 5, 2, 2)
        assert np.all(probs == i + 1)
        assert np.all(cams == i + 1)
    assert max(runner.calls) <= 4
    assert len(runner.calls) < len(sizes)
    assert runner.threads == {"cxr-model_0"}  # one model thread, never the event loop


@pytest.mark.parametrize("runner", [FakeRunner(delay_s=0.01, fail=True), FakeRunner(rows=1)])
def test_a_failed_call_fails_every_caller_in_it_and_the_next_call_runs(runner: FakeRunner) -> None:
    async def run() -> tuple[list[object], list[int]]:
        batcher = AdaptiveBatcher(runner, max_batch_size=8, max_latency_ms=5000)
        try:
            outcomes = await asyncio.gather(
                *(batcher(_images(1)) for _ in range(5)), return_exceptions=True
            )
            runner.fail, runner.rows = False, None
            after = await batcher(_images(7))
            return list(outcomes), [int(after.probs[0, 0]), after.batch_size]
        finally:
            batcher.close()

    outcomes, after = _run(run())
    assert all(
        isinstance(o, CannotAssess) and (o.status, o.reason) == (503, "model-error")
        for o in outcomes
    )
    assert len({id(o) for o in outcomes}) == 5  # one exception object per caller
    assert after == [7, 1]


def test_requests_past_the_latency_budget_are_shed_with_503(tiny_cxr: StoredModel) -> None:
    runner = SlowRunner(load_runner(tiny_cxr))

    async def run() -> list[object]:
        batcher = AdaptiveBatcher(runner, max_batch_size=1, max_latency_ms=10)
        try:
            image = np.zeros((1, 1, 64, 64), np.float32)
            return list(
                await asyncio.gather(*(batcher(image) for _ in range(30)), return_exceptions=True)
            )
        finally:
            batcher.close()

    outcomes = _run(run())
    refused = [o for o in outcomes if isinstance(o, CannotAssess)]
    assert refused, "a 10 ms budget with 20 ms calls must shed some requests"
    assert all(o.status == 503 and o.reason == "overloaded" for o in refused)
    assert not [o for o in outcomes if isinstance(o, Exception) and o not in refused]
    assert len(runner.calls) + len(refused) == 30  # a shed request never reaches the model


def test_learned_costs_shed_at_once_what_cannot_finish_in_time() -> None:
    runner = FakeRunner(delay_s=0.03)

    async def run() -> list[object]:
        batcher = AdaptiveBatcher(runner, max_batch_size=1, max_latency_ms=150)
        try:
            await batcher(_images(1))  # learn: ~30 ms per call
            outcomes = await asyncio.gather(
                *(batcher(_images(1)) for _ in range(20)), return_exceptions=True
            )
            return list(outcomes)
        finally:
            batcher.close()

    outcomes = _run(run())
    served = [o for o in outcomes if not isinstance(o, Exception)]
    assert 1 <= len(served) <= 6  # ~150 ms of budget buys about five 30 ms calls
    assert sum(runner.calls) == 1 + len(served)


def test_fixed_cost_is_learned_and_sets_the_window() -> None:
    batcher = AdaptiveBatcher(FakeRunner(delay_s=0.2), max_batch_size=8, max_window_ms=200)
    for n in (1, 2, 4, 8, 1, 8):
        batcher.cost.add(n, 0.1 + 0.001 * n)
    assert batcher.cost.fixed == pytest.approx(0.1, abs=1e-9)
    assert batcher.cost.per_image == pytest.approx(0.001, abs=1e-9)
    assert batcher.window_s() == 0.0  # no arrivals yet: never wait

    async def arrivals() -> float:
        calls = []
        for _ in range(3):  # requests ~1 ms apart, well inside the 100 ms fixed cost
            calls.append(asyncio.ensure_future(batcher(_images(1))))
            await asyncio.sleep(0.001)
        window = batcher.window_s()
        await asyncio.gather(*calls)
        batcher.close()
        return window

    assert _run(arrivals()) == pytest.approx(0.1, abs=1e-9)


def test_close_sheds_what_is_queued_and_refuses_new_calls() -> None:
    runner = FakeRunner(delay_s=0.05)

    async def run() -> list[object]:
        batcher = AdaptiveBatcher(runner, max_batch_size=1, max_latency_ms=5000)
        calls = [asyncio.ensure_future(batcher(_images(1))) for _ in range(3)]
        await asyncio.sleep(0.01)  # the first call is running, two are queued
        batcher.close()
        outcomes: list[object] = list(await asyncio.gather(*calls, return_exceptions=True))
        try:
            await batcher(_images(1))
        except CannotAssess as exc:
            outcomes.append(exc)
        return outcomes

    outcomes = _run(run())
    assert len(outcomes) == 4
    assert all(isinstance(o, CannotAssess) and o.reason == "overloaded" for o in outcomes)
