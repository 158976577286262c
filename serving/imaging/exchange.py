"""What the imaging routes and the PACS study routes share inside the one request
pipeline (:mod:`serving.http.pipeline`): finding the imaging state, reading the body
with a limit, and putting a read's facts on the call's audit exchange (a new read is
stored in the transaction of its audit row).
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse

from serving.http.audit import Exchange
from serving.http.pipeline import Answer
from serving.imaging.analysis import CannotAssess
from serving.imaging.results import Analysed, CxrResult, ResultStore
from serving.imaging.state import ImagingState
from serving.metrics import observe_read

__all__ = [
    "NotReady",
    "imaging_state",
    "new_read",
    "not_ready",
    "read_body",
    "shown_read",
]


class NotReady(Exception):
    """No chest X-ray model is configured, or it is not loaded yet."""


def imaging_state(request: Request) -> ImagingState:
    """The imaging state of the running app.

    Raises:
        NotReady: no CXR model is configured or it is not loaded.
    """
    runtime = getattr(request.app.state, "runtime", None)
    state = getattr(runtime, "imaging", None)
    if not isinstance(state, ImagingState) or not state.warmed:
        raise NotReady
    return state


def not_ready() -> Answer:
    """503: the imaging service cannot answer yet (audited as an error)."""
    body = {"error": "imaging-unavailable", "message": "no chest X-ray model is loaded"}
    return Answer(JSONResponse(body, status_code=503), "error", "imaging-unavailable")


def new_read(exchange: Exchange, analysed: Analysed) -> None:
    """Put a new read on ``exchange``: stored for its caller's tenant with the row's
    ``advice`` commit (and not at all if that commit fails)."""
    caller = exchange.caller
    shown_read(exchange, analysed.result)
    exchange.imaging_result = ResultStore.record(analysed, caller.tenant if caller else None)
    if analysed.monitored:
        exchange.after_advice.append(
            partial(observe_read, exchange.service_id, analysed.reference, analysed.monitored)
        )


def shown_read(exchange: Exchange, result: CxrResult) -> None:
    """Put the facts of a read shown (new or stored) on ``exchange``: the model that
    made it, its input hash and patient."""
    exchange.model = result.model
    exchange.input_sha256 = result.input_sha256
    exchange.patient_ref = result.patient_ref


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise CannotAssess("too-large", "the image is larger than allowed", status=413)
        chunks.append(chunk)
    return b"".join(chunks)
