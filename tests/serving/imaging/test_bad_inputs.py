"""docs/reliability.md "Bad input" over HTTP: every malformed or out-of-scope image gets a 4xx
with an acceptable reason code, no single input raises the worker's peak memory by
300 MB or more, and the service keeps answering.

The peak is measured per request (``tests.peak_memory`` resets the kernel's peak before
each one): the process's all-time peak (``ru_maxrss``) is already high after earlier
tests and could not show a bomb.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette

from serving.imaging.config import ImagingConfig
from serving.imaging.routes import routes
from serving.imaging.state import ImagingState
from tests.peak_memory import reset_peak, resident_mb
from tests.serving.imaging.conftest import Client, LockableAudit, fake_runtime
from tests.serving.imaging.cxr_fixtures import make_cxr_artifact

cases = pytest.importorskip("training.cxr_bad_inputs")

MAX_GROWTH_MB = 300  # peak resident memory one input may add to the worker


def test_every_bad_input_is_a_fast_reasoned_4xx(model_store: Path, tmp_path: Path) -> None:
    stored = make_cxr_artifact(tmp_path, size=224)  # the gate's real minimum side
    audit = LockableAudit.at(tmp_path)
    state = ImagingState.build(
        stored,
        ImagingConfig(),
        site="default",
        public_url="http://t",
        audit=audit,
    )
    app = Starlette(routes=routes())
    app.state.runtime = fake_runtime(state)
    client = Client(app)
    everything = cases.bad_dicom_cases() + cases.bad_image_cases()
    everything += cases.out_of_scope_pixel_cases() + cases.bomb_cases()
    wrong: list[str] = []
    try:
        valid = everything[0]
        assert valid.expected == frozenset({None})
        warm = client.post("/v1/imaging/cxr", content=valid.data,
                           headers={"content-type": "application/dicom"})  # fmt: skip
        assert warm.status_code == 200, warm.text
        for case in everything:
            media = "application/dicom" if case.media == "dicom" else "image/png"
            start = reset_peak()
            response = client.post(
                "/v1/imaging/cxr", content=case.data, headers={"content-type": media}
            )
            growth = resident_mb()[1] - start
            if growth >= MAX_GROWTH_MB:
                wrong.append(f"{case.name}: peak memory grew by {growth:.0f} MB")
            if response.status_code == 200:
                reason = None
            else:
                assert 400 <= response.status_code < 500, (case.name, response.status_code)
                reason = response.json()["reason"]
            # The service also caps the body size (413 before any parsing).
            capped = len(case.data) > state.config.max_body_bytes
            if capped:
                assert response.status_code == 413, case.name
            elif reason not in case.expected:
                wrong.append(
                    f"{case.name}: got {reason!r}, expected {sorted(map(str, case.expected))}"
                )
        assert not wrong, "\n".join(wrong)
        # One audit row per request, and the worker still answers.
        assert audit.count() == len(everything) + 1
    finally:
        client.close()
        audit.close()
