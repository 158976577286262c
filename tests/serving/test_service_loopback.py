"""Dev mode and the demo answer loopback clients only, and refuse a public bind."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from starlette.applications import Starlette

from serving.app import create_app
from serving.bento_internals import listening_host, refuse_open_bind
from serving.settings import Settings


def _get(app: Starlette, client: tuple[str, int], path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.get(path)

    return asyncio.run(go())


@pytest.mark.parametrize("mode", [{"dev": True}, {"demo_issuer_dir": Path("demo")}])
def test_dev_and_demo_refuse_clients_not_on_loopback(mode: dict[str, object]) -> None:
    app = create_app(Settings(**mode))  # type: ignore[arg-type]
    app.state.runtime = SimpleNamespace(settings=Settings(**mode))  # type: ignore[arg-type]
    for outside in (("10.0.0.7", 5000), ("192.168.1.20", 5000), ("2001:db8::1", 5000)):
        refused = _get(app, outside, "/cds-services")
        assert (refused.status_code, refused.content) == (401, b'{"error":"unauthorized"}')
    # Loopback clients get through to the route (which then asks for its runtime).
    assert _get(app, ("127.0.0.1", 5000), "/v1/openapi.json").status_code == 200
    assert _get(app, ("::1", 5000), "/v1/openapi.json").status_code == 200


def test_production_mode_serves_any_address() -> None:
    app = create_app(Settings())
    assert _get(app, ("10.0.0.7", 5000), "/v1/openapi.json").status_code == 200


@pytest.mark.parametrize(("host", "public"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_dev_mode_refuses_a_public_bind(
    host: str, public: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind((host, 0))
        sock.listen()
        argv = ["worker", "--fd", str(sock.fileno()), "--worker-id", "1"]
        assert listening_host(argv) == host
        monkeypatch.setattr(sys, "argv", argv)
        refuse_open_bind(Settings())  # production mode: any address
        if public:
            with pytest.raises(RuntimeError, match="loopback address only"):
                refuse_open_bind(Settings(dev=True))
        else:
            refuse_open_bind(Settings(dev=True))


def test_no_worker_socket_means_no_check() -> None:
    assert listening_host(["pytest"]) is None
    assert listening_host(["worker", "--fd", "not-a-number"]) is None
