"""Fixtures for the imaging serving tests: a tiny model, the app, a real SQLite audit store."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from starlette.applications import Starlette

from models.registry import StoredModel
from serving import cds_hooks
from serving.audit import AuditStore
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


class LockableAudit(AuditStore):
    """The real audit store on a SQLite file; ``fail = True`` holds its write lock from
    another connection, as a stuck writer would, so commits fail (quickly: a 50 ms busy
    timeout instead of the service's 10 s) while reads still work."""

    path: Path
    _lock: sqlite3.Connection | None = None

    @classmethod
    def at(cls, folder: Path) -> LockableAudit:
        """A fresh, migrated store in ``folder``."""
        path = folder / "audit.db"
        store = cls.open(f"sqlite:///{path}")
        assert isinstance(store, LockableAudit)
        store.path = path
        event.listen(store.engine, "connect", _short_busy_timeout)
        store.engine.dispose()  # connections made before the listener go
        return store

    @property
    def fail(self) -> bool:
        return self._lock is not None

    @fail.setter
    def fail(self, value: bool) -> None:
        if value and self._lock is None:
            self._lock = sqlite3.connect(self.path, isolation_level=None)
            self._lock.execute("BEGIN EXCLUSIVE")
        elif not value and self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None

    def close(self) -> None:
        self.fail = False
        super().close()


def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout = 50")


@pytest.fixture
def tiny_cxr(model_store: Path, tmp_path: Path) -> StoredModel:
    """The tiny C7 model (64 px) in a private store."""
    return make_cxr_artifact(tmp_path)


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[LockableAudit]:
    store = LockableAudit.at(tmp_path)
    yield store
    store.close()


AppFactory = Callable[..., tuple[Client, ImagingState]]


def fake_runtime(
    state: ImagingState, *, dev: bool = True, api_keys: Any = None, cds_auth: Any = None
) -> SimpleNamespace:
    """What the imaging routes and ``/cds-services/{id}`` read of a running service: its
    imaging state, the cxr-triage service, link key, authenticators (none: dev mode)
    and audit store."""
    signer = LinkSigner(b"k" * 32, timedelta(days=30))
    return SimpleNamespace(
        imaging=state,
        link_signer=signer,
        cds_services={SERVICE_ID: CxrTriage(state)},
        cds_auth=cds_auth,
        api_keys=api_keys,
        audit=state.audit,
        settings=SimpleNamespace(dev=dev, public_url=state.public_url),
        language="en",
        silent=lambda service_id: False,
    )


@pytest.fixture
def make_app(tiny_cxr: StoredModel, audit: LockableAudit) -> Iterator[AppFactory]:
    """Build the imaging routes around the tiny model: ``make_app(**config)``."""
    clients: list[Client] = []

    def build(
        dev: bool = True, authenticator: Any = None, **config: Any
    ) -> tuple[Client, ImagingState]:
        imaging = ImagingConfig(**config)
        state = ImagingState.build(
            tiny_cxr,
            imaging,
            site="test-site",
            public_url="https://tonle.test",
            audit=audit,
        )
        app = Starlette(routes=[*routes(), *cds_hooks.routes()])
        app.state.runtime = fake_runtime(state, dev=dev, api_keys=authenticator)
        clients.append(Client(app))
        return clients[-1], state

    yield build
    for client in clients:
        client.close()
