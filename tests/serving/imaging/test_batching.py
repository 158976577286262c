"""Adaptive batching of the model call: concurrent requests share ONNX Runtime calls."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from models.registry import StoredModel
from serving.imaging.analysis import CannotAssess
from serving.imaging.batching import AdaptiveBatcher
from serving.imaging.runner import load_runner


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

    async def run() -> list[tuple[np.ndarray, np.ndarray]]:
        batcher = AdaptiveBatcher(runner, max_batch_size=8, max_latency_ms=5000)
        try:
            # Warm the dispatcher's latency model, then fire everything at once.
            for image in images[:12]:
                await batcher(image)
            return list(await asyncio.gather(*(batcher(image) for image in images)))
        finally:
            batcher.close()

    loop = asyncio.new_event_loop()
    try:
        got = loop.run_until_complete(run())
    finally:
        loop.close()
    for (probs, cams), (want_probs, want_cams) in zip(got, expected, strict=True):
        np.testing.assert_allclose(probs, want_probs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cams, want_cams, rtol=1e-5, atol=1e-5)
    assert max(runner.calls) > 1  # some calls carried several images
    assert max(runner.calls) <= 8
    assert sum(runner.calls[-(len(runner.calls) - 12) :]) == 24


def test_shed_requests_are_503_overloaded(tiny_cxr: StoredModel) -> None:
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

    loop = asyncio.new_event_loop()
    try:
        outcomes = loop.run_until_complete(run())
    finally:
        loop.close()
    refused = [o for o in outcomes if isinstance(o, CannotAssess)]
    assert refused, "a 10 ms budget with 20 ms calls must shed some requests"
    assert all(o.status == 503 and o.reason == "overloaded" for o in refused)
    assert not [o for o in outcomes if isinstance(o, Exception) and o not in refused]
