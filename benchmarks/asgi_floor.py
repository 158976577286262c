"""The least any Python ASGI service can do with an upload: receive it whole, answer.

``benchmarks/bench_cxr_http.py`` serves this with uvicorn (the same uvicorn, uvloop and
httptools that ``bentoml serve`` runs) to measure, in the same run, the CPU one request
of a given size costs before any application code: the floor under the CPU-ms per
request of the real service, and so a ceiling on the 8-client ratio on shared cores.

Usage: ``python -m uvicorn benchmarks.asgi_floor:app --port PORT``
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Join the request body into one ``bytes`` (as a decoder needs it), answer its size."""
    if scope["type"] != "http":
        return
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = bool(message.get("more_body"))
    body = b'{"bytes": %d}' % len(b"".join(chunks))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
