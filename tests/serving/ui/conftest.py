"""Fixtures shared by the UI tests (one fixture model store per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.ui.ui_fixtures import build_cvd_store


@pytest.fixture(scope="session")
def ui_store_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding the fixture CVD model."""
    return build_cvd_store(tmp_path_factory.mktemp("ui-store"))
