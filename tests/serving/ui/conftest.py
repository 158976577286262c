"""Fixtures shared by the UI tests (one fixture model store per session)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from serving.runtime import Runtime
from tests.serving.service_process import free_port
from tests.serving.ui.ui_fixtures import build_cvd_store, demo_app


@pytest.fixture(scope="session")
def ui_store_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding the fixture CVD model."""
    return build_cvd_store(tmp_path_factory.mktemp("ui-store"))


CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def server(
    ui_store_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Runtime]]:
    """The demo app (with chest X-ray serving) under a real uvicorn server, one per module."""
    tmp = tmp_path_factory.mktemp("ui-browser")
    url = f"http://127.0.0.1:{free_port()}"
    with demo_app(ui_store_home, tmp, public_url=url, cxr=True) as (app, runtime):
        config = uvicorn.Config(app, host="127.0.0.1", port=int(url.rsplit(":", 1)[1]))
        config.log_level = "warning"
        srv = uvicorn.Server(config)
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not srv.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.started
        try:
            yield url, runtime
        finally:
            srv.should_exit = True
            thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium, one per test module."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():  # pragma: no cover - `make test` installs it (SYSTEM_PACKAGES)
        pytest.fail("Debian chromium is required: apt-get install chromium", pytrace=False)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()
