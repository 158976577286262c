"""Fixtures for the imaging serving tests: a tiny model, the app, a fake audit store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from models.registry import StoredModel
from serving import cds_hooks
from serving.imaging.cds import SERVICE_ID, CxrTriage
from serving.imaging.config import ImagingConfig
from serving.imaging.routes import routes
from serving.imaging.state import ImagingState
from serving.ui.links import LinkSigner
from tests.serving.imaging.cxr_fixtures import make_cxr_artifact


class Client:
    """A synchronous HTTP client on an ASGI app (httpx ``ASGITransport``)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        # One loop for the client's life, as in a server (the batcher binds to it).
        self.loop = asyncio.new_event_loop()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.request(method, url, **kwargs)

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:

            async def drain() -> None:
                await asyncio.gather(*pending, return_exceptions=True)

            self.loop.run_until_complete(drain())
        self.loop.close()

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


class ListAudit:
    """Collects audit rows; ``fail`` makes ``record`` raise like a full disk."""

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.fail = False

    def record(self, row: Any) -> None:
        if self.fail:
            raise OSError("disk full")
        self.rows.append(row)

    async def record_async(self, row: Any) -> None:
        self.record(row)


@pytest.fixture
def tiny_cxr(model_store: Path, tmp_path: Path) -> StoredModel:
    """The tiny C7 model (64 px) in a private store."""
    return make_cxr_artifact(tmp_path)


@pytest.fixture
def audit() -> ListAudit:
    return ListAudit()


AppFactory = Callable[..., tuple[Client, ImagingState]]


def fake_runtime(state: ImagingState) -> SimpleNamespace:
    """What the imaging routes and ``/cds-services/{id}`` read of a running service: its
    imaging state, the cxr-triage service, link key, authenticators and audit store."""
    signer = LinkSigner(b"k" * 32, timedelta(days=30))
    return SimpleNamespace(
        extras={"imaging": state, "link_signer": signer},
        cds_services={SERVICE_ID: CxrTriage(state)},
        cds_auth=state.cds_auth,
        api_keys=state.authenticator,
        audit=state.audit,
        settings=SimpleNamespace(dev=state.dev, public_url=state.public_url),
        language="en",
    )


@pytest.fixture
def make_app(tiny_cxr: StoredModel, tmp_path: Path, audit: ListAudit) -> Iterator[AppFactory]:
    """Build the imaging routes around the tiny model: ``make_app(**config)``."""
    clients: list[Client] = []

    def build(
        dev: bool = True, authenticator: Any = None, **config: Any
    ) -> tuple[Client, ImagingState]:
        imaging = ImagingConfig(results_dir=tmp_path / "imaging", **config)
        state = ImagingState.build(
            tiny_cxr,
            imaging,
            site="test-site",
            public_url="https://tonle.test",
            audit=audit,
            authenticator=authenticator,
            dev=dev,
        )
        app = Starlette(routes=[*routes(), *cds_hooks.routes()])
        app.state.runtime = fake_runtime(state)
        clients.append(Client(app))
        return clients[-1], state

    yield build
    for client in clients:
        client.close()
