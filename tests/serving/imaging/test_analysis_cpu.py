"""The analyser runs at most one decode (and, without batching, model call) per core."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import models.cxr_preprocess as preprocess
from tests.serving.imaging.conftest import AppFactory
from tests.serving.imaging.cxr_fixtures import dicom_bytes


class _Busy:
    """Wraps a function; records how many calls ran at once."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.05)  # long enough for every caller to arrive meanwhile
            return self.fn(*args, **kwargs)
        finally:
            with self.lock:
                self.now -= 1


@pytest.mark.parametrize("method", ["prepare", "analyse"])
def test_no_more_decodes_at_once_than_cores(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    _, state = make_app(adaptive_batching=False)
    busy = _Busy(preprocess.decode_dicom)
    monkeypatch.setattr(preprocess, "decode_dicom", busy)
    data = dicom_bytes()
    callers = (os.cpu_count() or 1) + 4
    run = getattr(state.analyser, method)
    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(lambda _: run(data, "application/dicom"), range(callers)))
    assert len(results) == callers
    assert busy.most == (os.cpu_count() or 1)
