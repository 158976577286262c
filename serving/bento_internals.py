"""Everything Tonle takes from BentoML beyond its public API, in one place.

* :class:`TimeoutMiddleware`: BentoML's request timeout with its timer cancelled once
  the request is done, patched into ``bentoml._internal.server.http.traffic``.
* :func:`listening_host`: the address the serving worker's socket is bound to, which
  :func:`refuse_open_bind` checks in dev mode and the demo.
* :func:`swagger_ui_assets`: the Swagger UI files BentoML ships (served by ``/docs``).

``tests/serving/test_bento_internals.py`` fails loudly when a BentoML upgrade moves or
changes any of them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bentoml._internal.server.http import traffic as bentoml_traffic
from starlette.responses import JSONResponse

from serving.http.caller import is_loopback

if TYPE_CHECKING:
    from serving.settings import Settings

__all__ = [
    "TimeoutMiddleware",
    "install_timeout_middleware",
    "listening_host",
    "refuse_open_bind",
    "swagger_ui_assets",
]


class TimeoutMiddleware(bentoml_traffic.TimeoutMiddleware):
    """BentoML's request timeout, with its timer cancelled once the request is done.

    BentoML 1.4's own never cancels the timer, which keeps each finished request's
    context (tracing span, futures) alive for the full timeout: the worker's memory grows
    by ~6 KB per call until calls/s x timeout requests are held (+40 MB at 220 calls/s
    and 30 s), which the steady-load test reads as drift.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, _send))
        try:
            await waiter
        except TimeoutError:
            if task.cancel():
                body = {"error": f"Not able to process the request in {self.timeout} seconds"}
                await JSONResponse(body, status_code=504)(scope, receive, send)
            return
        finally:
            timer.cancel()
        await task


def install_timeout_middleware() -> None:
    """Make BentoML build its middleware stack with :class:`TimeoutMiddleware`.

    BentoML reads this module attribute when the worker starts, after importing the
    service module. Drop this once BentoML cancels its own timer.
    """
    bentoml_traffic.TimeoutMiddleware = TimeoutMiddleware  # type: ignore[misc]


def listening_host(argv: list[str] | None = None) -> str | None:
    """The address the serving worker listens on, or None outside a BentoML worker.

    The arbiter binds the socket and passes it to each worker as ``--fd N``; the worker
    is checked before it serves anything.
    """
    args = sys.argv if argv is None else argv
    if "--fd" not in args[:-1]:
        return None
    try:
        fd = int(args[args.index("--fd") + 1])
        with socket.socket(fileno=os.dup(fd)) as sock:
            host: str = sock.getsockname()[0]
    except (ValueError, OSError):
        return None
    return host


def refuse_open_bind(settings: Settings) -> None:
    """Dev mode and the demo serve unauthenticated (or self-issued) callers: refuse to
    start when the worker listens on anything but a loopback address.

    Raises:
        RuntimeError: dev mode or the demo on a non-loopback address.
    """
    if not (settings.dev or settings.demo_issuer_dir is not None):
        return
    host = listening_host()
    if host is not None and not is_loopback(host):
        raise RuntimeError(
            f"TONLE_DEV / TONLE_DEMO_ISSUER_DIR serve unauthenticated callers and are "
            f"allowed on a loopback address only, but this service listens on {host}: "
            "bind to 127.0.0.1, or configure authentication instead"
        )


def swagger_ui_assets() -> Path:
    """The folder of the Swagger UI files bundled with BentoML (no CDN).

    Raises:
        FileNotFoundError: this BentoML version does not ship them there.
    """
    from bentoml._internal import server

    folder = Path(server.__file__).parent / "static_content"
    if not (folder / "swagger-ui-bundle.js").is_file():
        raise FileNotFoundError(f"no Swagger UI bundle in {folder}")
    return folder
