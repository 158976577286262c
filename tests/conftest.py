"""Fixtures shared by every test package."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Give the next test the root logger's handlers and level as they were before this one.

    CLI commands and the service call ``models.logs.configure_logging``, which replaces the
    root handlers and sets the level: left in place, every later test would see its log lines
    twice in captured stderr (once from that handler, once from pytest's), and at DEBUG after
    a ``-v`` run. pytest's own capture handlers are attached during setup, call and teardown
    alike, so they are part of the snapshot and stay where pytest expects them.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def model_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private BentoML model store for one test."""
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, reports)."""
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
