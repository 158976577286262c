"""Adaptive batching of the CXR model call with BentoML's dispatcher.

BentoML's ``@bentoml.api(batchable=True)`` puts a ``CorkDispatcher`` in front of a
service method: it learns how long a batch of ``n`` takes and holds requests just
long enough to fill a batch without breaking ``max_latency_ms``. Our analysis route
lives on the mounted ASGI app (decode and preprocessing must not be batched), and a
route there can only reach a ``batchable`` API of another service through an
inter-process hop, measured at +8-15 ms per call on 2 cores. So the same dispatcher
class is driven here, in process, around the ONNX Runtime call only.

Requests that would wait longer than ``max_latency_ms`` are shed with
:class:`~serving.imaging.analysis.CannotAssess` (``overloaded``, 503).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from serving.imaging.analysis import CannotAssess, CxrModelRunner

__all__ = ["AdaptiveBatcher"]

logger = logging.getLogger(__name__)

Outputs = tuple[np.ndarray, np.ndarray]


def _overloaded() -> Outputs:
    raise CannotAssess("overloaded", "the model queue is full; retry shortly", status=503)


class AdaptiveBatcher:
    """An async ``[n,1,S,S] -> (probs, cams)`` call that batches concurrent requests.

    Args:
        runner: the model (its ``predict`` takes any batch size).
        max_batch_size: most images per model call.
        max_latency_ms: longest a request may wait plus run before it is shed.
    """

    def __init__(
        self, runner: CxrModelRunner, max_batch_size: int = 8, max_latency_ms: int = 2000
    ) -> None:
        from bentoml._internal.marshal.dispatcher import CorkDispatcher

        self.runner = runner
        self.batch_sizes: list[int] = []
        dispatcher: Any = CorkDispatcher(
            max_latency_in_ms=max_latency_ms,
            max_batch_size=max_batch_size,
            fallback=_overloaded,
            get_batch_size=lambda images: int(images.shape[0]),
            batch_dim=(0, 0),
        )
        self._dispatcher = dispatcher
        self._call = dispatcher(self._run_batch)

    async def _run_batch(self, items: Sequence[np.ndarray]) -> list[Outputs]:
        sizes = [int(item.shape[0]) for item in items]
        batch = items[0] if len(items) == 1 else np.concatenate(list(items), axis=0)
        try:
            probs, cams = await run_in_threadpool(self.runner.predict, batch)
        except Exception as exc:  # every caller in the batch gets no advice, with a reason
            raise CannotAssess("model-error", "the model call failed", 503) from exc
        if len(self.batch_sizes) < 10_000:
            self.batch_sizes.append(len(batch))
        out: list[Outputs] = []
        start = 0
        for size in sizes:
            out.append((probs[start : start + size], cams[start : start + size]))
            start += size
        return out

    async def __call__(self, images: np.ndarray) -> Outputs:
        """Probabilities and maps for ``images``, computed in a shared batch.

        Raises:
            CannotAssess: ``overloaded`` when the request was shed.
        """
        result: Outputs | None = await self._call(images)
        if result is None:
            return _overloaded()
        return result

    def close(self) -> None:
        """Stop the dispatcher and cancel queued requests."""
        self._dispatcher.shutdown()
