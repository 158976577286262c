"""Adaptive batching of the CXR model call: a small asyncio batcher of our own.

Concurrent requests put their ``[n, 1, S, S]`` images in one queue; a single task
takes everything waiting (up to ``max_batch_size`` images) whenever the model is
free and runs it as one ONNX Runtime call on a dedicated thread, then hands each
caller its own rows. While a call runs, new requests queue, so batches form from
the load itself. When the model is idle and a request arrives, the batcher waits a
short *adaptive window* for company, and only when it can pay: the window is the
fixed per-call cost learned from recent calls (least squares of call time on batch
size), used only while requests arrive faster than that. A request that would wait
past ``max_latency_ms`` is shed with 503 ``overloaded``: at once when the learned
costs predict it, else when it reaches the head of the queue too late.

Why not BentoML's ``@bentoml.api(batchable=True)``: in BentoML 1.4 the dispatcher
(``CorkDispatcher``) of a batchable API is created by the HTTP app factory and is
only reached through that API's HTTP route (``_bentoml_impl/server/app.py``:
``batch_infer`` is called from ``api_endpoint``); calling the method from another
API of the same service, or from the mounted ASGI app where our route lives, is a
plain method call without batching. The documented way to batch calls made by other
code is a second service behind ``bentoml.depends``, which runs in its own process:
an inter-process hop of +8-15 ms per request measured on 2 cores, more than the
whole model call of the default network (~2-5 ms). Driving the private
``bentoml._internal`` dispatcher in process worked but is not a supported API.

Measured with ``benchmarks/bench_cxr_http.py`` (2 cores shared with the load generator
and, at the time, with other work: load average 5-7), 8 closed-loop clients, ratio =
req/s / model-only ORT batch-8 img/s, "CPU ratio" = the same on equal CPU shares:

=====================  ==========================  ==========================
input, network         batching on                 batching off
=====================  ==========================  ==========================
3000x2500 resnet-small 26 req/s, 9 % (CPU 7 %)     32 req/s, 10 % (CPU 8 %)
512x512 resnet-small   71 req/s, 33 % (CPU 17 %)   94 req/s, 35 % (CPU 23 %)
3000x2500 densenet121  12 req/s, 63 % (CPU 58 %)   13 req/s, 89 % (CPU 62 %)
512x512 densenet121    19 req/s, 91 % (CPU 84 %)   15 req/s, 109 % (CPU 91 %)
=====================  ==========================  ==========================

Batches averaged 1.7-2.4 images (resnet-small) and 4 (DenseNet121). Batching saves
little on this CPU: ONNX Runtime's CPU time per image hardly depends on the batch size
(DenseNet121 26-31 CPU-ms, resnet-small 1.8-1.9 CPU-ms at batch 1, 4 and 8), so it
can only amortise the per-call overhead; the ratio is set by the CPU each request
costs outside the model (~6 CPU-ms for a 512 px DICOM, ~21 for the 15 MB one).
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from serving.imaging.analysis import CannotAssess, CxrModelRunner

__all__ = ["AdaptiveBatcher", "Batched"]

logger = logging.getLogger(__name__)


class Batched(NamedTuple):
    """One caller's rows of a shared model call."""

    probs: np.ndarray  # [n, L]
    cams: np.ndarray  # [n, L, h, w]
    batch_size: int  # images in the model call the rows came from


_HISTORY = 64  # model calls the cost estimate is fitted on


def _overloaded() -> CannotAssess:
    return CannotAssess("overloaded", "the model queue is full; retry shortly", status=503)


@dataclass
class _Waiting:
    images: np.ndarray
    future: asyncio.Future[Batched]
    queued: float  # time.perf_counter() at arrival


class _CallCost:
    """Seconds per model call as ``fixed + per_image * n``, fitted on recent calls."""

    def __init__(self) -> None:
        self._calls: deque[tuple[int, float]] = deque(maxlen=_HISTORY)
        self.fixed = 0.0
        self.per_image = 0.0

    def add(self, n: int, seconds: float) -> None:
        self._calls.append((n, seconds))
        sizes = [float(c[0]) for c in self._calls]
        times = [c[1] for c in self._calls]
        mean = statistics.fmean(times)
        if min(sizes) == max(sizes):  # one batch size seen: no split, assume no fixed cost
            self.fixed, self.per_image = 0.0, mean / sizes[0]
            return
        # Pure Python: it runs on the event loop after every call (np.polyfit cost ~0.1 ms).
        slope, intercept = statistics.linear_regression(sizes, times)
        self.per_image = max(slope, 0.0)
        self.fixed = min(max(intercept, 0.0), mean)

    def predict(self, n: int) -> float:
        return self.fixed + self.per_image * n


class AdaptiveBatcher:
    """An async ``[n,1,S,S] -> (probs, cams)`` call that batches concurrent requests.

    Args:
        runner: the model (its ``predict`` takes any batch size).
        max_batch_size: most images per model call.
        max_latency_ms: longest a request may wait plus run before it is shed.
        max_window_ms: longest the idle model waits for a second request.
    """

    def __init__(
        self,
        runner: CxrModelRunner,
        max_batch_size: int = 8,
        max_latency_ms: int = 2000,
        max_window_ms: float = 10.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size is {max_batch_size}; allowed: 1 or more")
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000
        self.max_window_s = max_window_ms / 1000
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # images per model call
        self.cost = _CallCost()
        self._queue: deque[_Waiting] = deque()
        self._running: list[_Waiting] = []
        self._queued_images = 0
        self._arrived = asyncio.Event()
        self._gap_s = math.inf  # smoothed time between arrivals
        self._last_arrival: float | None = None
        self._busy_until = 0.0  # predicted end of the running call
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxr-model")
        self._closed = False

    async def __call__(self, images: np.ndarray) -> Batched:
        """Probabilities and maps for ``images``, computed in a shared batch.

        Raises:
            CannotAssess: ``overloaded`` (503) when the request was shed;
                ``model-error`` (503) when the model call failed.
        """
        if self._closed:
            raise _overloaded()
        now = time.perf_counter()
        n = int(images.shape[0])
        if self._predicted_wait(now, n) > self.max_latency_s:
            raise _overloaded()
        if self._last_arrival is not None:
            gap = now - self._last_arrival
            self._gap_s = gap if math.isinf(self._gap_s) else 0.8 * self._gap_s + 0.2 * gap
        self._last_arrival = now
        future: asyncio.Future[Batched] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(images, future, now))
        self._queued_images += n
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._serve())
        return await future

    def window_s(self) -> float:
        """How long an idle model waits for a second request: the learned fixed cost of
        a call, when requests arrive faster than that; else 0."""
        window = min(self.cost.fixed, self.max_window_s)
        return window if self._gap_s < window else 0.0

    def _predicted_wait(self, now: float, n: int) -> float:
        ahead = self._queued_images + n
        calls = math.ceil(ahead / self.max_batch_size)
        busy = max(self._busy_until - now, 0.0)
        return busy + calls * self.cost.fixed + ahead * self.cost.per_image

    async def _serve(self) -> None:
        while not self._closed:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            deadline = self._queue[0].queued + self.window_s()
            while self._queued_images < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            taken = self._take()
            if taken:
                await self._run(taken)

    def _take(self) -> list[_Waiting]:
        """Up to ``max_batch_size`` images from the head of the queue; requests that
        already waited past the latency budget are shed, cancelled ones dropped."""
        taken: list[_Waiting] = []
        size = 0
        now = time.perf_counter()
        while self._queue:
            head = self._queue[0]
            n = int(head.images.shape[0])
            if taken and size + n > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_images -= n
            if head.future.done():  # the caller went away
                continue
            if now - head.queued + self.cost.predict(size + n) > self.max_latency_s:
                head.future.set_exception(_overloaded())
                continue
            taken.append(head)
            size += n
        return taken

    async def _run(self, taken: list[_Waiting]) -> None:
        batch = (
            taken[0].images
            if len(taken) == 1
            else np.concatenate([w.images for w in taken], axis=0)
        )
        n = int(batch.shape[0])
        started = time.perf_counter()
        self._busy_until = started + self.cost.predict(n)
        self._running = taken
        loop = asyncio.get_running_loop()
        try:
            probs, cams = await loop.run_in_executor(self._executor, self.runner.predict, batch)
            if len(probs) != n or len(cams) != n:
                raise ValueError(f"the model answered {len(probs)} rows for {n} images")
        except Exception as exc:  # every caller in the batch gets no advice, with a reason
            logger.warning("cxr model call failed for a batch of %d (%s)", n, type(exc).__name__)
            for waiting in taken:
                if not waiting.future.done():
                    error = CannotAssess("model-error", "the model call failed", 503)
                    error.__cause__ = exc
                    waiting.future.set_exception(error)
            return
        finally:
            self._busy_until = 0.0
            self._running = []
        self.cost.add(n, time.perf_counter() - started)
        self.batch_sizes.append(n)
        start = 0
        for waiting in taken:
            size = int(waiting.images.shape[0])
            if not waiting.future.done():
                rows = slice(start, start + size)
                waiting.future.set_result(Batched(probs[rows], cams[rows], n))
            start += size

    def close(self) -> None:
        """Stop the batcher: queued requests are shed, the model thread is released."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
        for waiting in [*self._running, *self._queue]:
            if not waiting.future.done():
                waiting.future.set_exception(_overloaded())
        self._queue.clear()
        self._queued_images = 0
        self._executor.shutdown(wait=False)
