"""Throw-away databases for store tests: a SQLite file, or a uniquely named PostgreSQL db.

PostgreSQL is the real server at ``TONLE_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``); each call of
:func:`postgres_database` creates a fresh database and drops it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import make_url

ADMIN_URL = os.environ.get(
    "TONLE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def admin_conninfo() -> str:
    """libpq connection string of the admin database (for CREATE/ALTER/DROP DATABASE)."""
    url = make_url(ADMIN_URL)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def postgres_database(prefix: str = "tonle_test") -> Iterator[str]:
    """Create a uniquely named database; yield its SQLAlchemy URL; drop it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_conninfo(), autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_conninfo(), autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_schema(database_url: str) -> Iterator[str]:
    """A fresh schema in an existing database (much cheaper than a database per test).

    Yields the database URL with ``search_path`` set to the new schema, so migrations and
    queries see only it; the schema is dropped afterwards.
    """
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = make_url(database_url)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield url.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
