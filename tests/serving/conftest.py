"""Fixtures of the serving tests that store on either database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.db_fixtures import postgres_database, postgres_schema


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database per test module (dropped after it)."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: str) -> Iterator[str]:
    """A fresh audit database URL: a SQLite file, or a new schema in the module's
    PostgreSQL database (a module may define its own ``db_url`` instead)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    with postgres_schema(pg_database) as url:
        yield url
