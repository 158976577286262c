"""``tonle db``, ``tonle apikey`` and ``tonle audit``: the audit database, for operators.

They act on the audit database named by ``--database-url`` or ``TONLE_DATABASE_URL``
(default ``sqlite:///.tonle/tonle.db``). Heavy imports stay inside the commands so
``tonle --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.console import EXIT_BAD_INPUT, EXIT_USAGE, console, fail, out

if TYPE_CHECKING:
    from sqlalchemy import URL

    from serving.audit import AuditStore

__all__ = ["apikey_app", "audit_app", "db_app", "open_store", "parse_when", "register"]

db_app = typer.Typer(
    help="Create, upgrade, back up and prune the audit database.", no_args_is_help=True
)
apikey_app = typer.Typer(
    help="API keys for the REST endpoints (hashed at rest).", no_args_is_help=True
)
audit_app = typer.Typer(help="Read the audit trail.", no_args_is_help=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (default: TONLE_DATABASE_URL, else sqlite:///.tonle/tonle.db).",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add the ``db``, ``apikey`` and ``audit`` command groups to ``app``."""
    app.add_typer(db_app, name="db")
    app.add_typer(apikey_app, name="apikey")
    app.add_typer(audit_app, name="audit")


def _url(database_url: str | None) -> URL:
    """``--database-url``, else ``TONLE_DATABASE_URL``, parsed; exit 4 when it is no URL."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    option = "--database-url" if database_url else "TONLE_DATABASE_URL"
    if not database_url:
        from serving.settings import Settings

        database_url = Settings().database_url.get_secret_value()
    try:
        return make_url(database_url)
    except (ArgumentError, ValueError):  # a message could repeat the URL and its password
        raise fail(
            f"{option} is not a SQLAlchemy URL (e.g. sqlite:///.tonle/tonle.db or "
            "postgresql+psycopg://tonle@db/tonle)",
            EXIT_BAD_INPUT,
        ) from None


def open_store(database_url: str | None) -> AuditStore:
    """The audit store at ``database_url`` (default: the settings'), or a clean exit."""
    from serving.audit import AuditStore, AuditUnavailable

    url = _url(database_url)
    try:
        return AuditStore.open(url.render_as_string(hide_password=False))
    except (AuditUnavailable, ValueError) as exc:
        # The driver's message says why (no such database, refused, not a file), on
        # one line; drivers never put the password in it. The service logs the class.
        driver = getattr(exc.__cause__, "orig", None)
        why = [" ".join(str(driver).split())[:300]] if driver is not None else []
        raise fail("; ".join([str(exc), *why])) from exc


def parse_when(value: str | None, option: str) -> datetime | None:
    """An ISO date or date-time option as an aware datetime (UTC when none is given)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise fail(
            f"{option} {value!r} is not an ISO date or date-time (e.g. 2026-01-31 or "
            "2026-01-31T08:00:00+07:00)",
            EXIT_BAD_INPUT,
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Apply the shipped migrations (the service also does this at start).

    Example: tonle db upgrade --database-url postgresql+psycopg://tonle@db/tonle
    """
    from serving.audit.engine import current_revisions

    store = open_store(database_url)
    out.print(f"audit database at revision {', '.join(current_revisions(store.engine))}")
    store.close()


@db_app.command("grant-service-role")
def db_grant_service_role(
    role: Annotated[str, typer.Argument(help="Existing PostgreSQL role the service logs in as.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Grant a PostgreSQL role only what the service needs (audit tables: INSERT/SELECT).

    Run as the owner role after `tonle db upgrade`; then serve with a
    TONLE_DATABASE_URL that logs in as ROLE. Later upgrades give ROLE its rights on
    the tables they add.

    Example: tonle db grant-service-role tonle_service
    """
    from serving.audit.engine import grant_service_role

    store = open_store(database_url)
    try:
        grant_service_role(store.engine, role)
    except ValueError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from exc
    finally:
        store.close()
    out.print(f"granted {role}: INSERT/SELECT on audit tables, no UPDATE/DELETE")


@db_app.command("prune-pixels")
def db_prune_pixels(
    days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep copies of reads made in the last DAYS days "
            "(default: TONLE_IMAGING_PIXELS_DAYS).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say how many copies and bytes would go.")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Empty the X-ray reader's full-resolution copies older than the retention.

    The reads, their cards, heatmaps and audit rows stay; the reader then shows the
    analysed image and says the copy is gone (open the study from the PACS). The
    service does the same by itself, a batch a minute, when TONLE_IMAGING_PIXELS_DAYS
    is set; this catches up at once (e.g. after setting it). Reads stored before
    version 0006 of the schema keep their copy inside the read: never emptied.

    Example: tonle db prune-pixels --days 90 --dry-run
    """
    from serving.settings import Settings

    keep = days if days is not None else Settings().imaging_pixels_days
    if not keep:
        raise fail(
            "TONLE_IMAGING_PIXELS_DAYS is 0 (copies kept for ever): set it or pass --days",
            EXIT_USAGE,
        )
    store = open_store(database_url)
    try:
        before = store.pixels_cutoff(keep)
        done = store.pixels_to_prune(before) if dry_run else store.prune_pixels(before)
    finally:
        store.close()
    verb = "would empty" if dry_run else "emptied"
    out.print(
        f"{verb} {done.copies} reader copies ({done.bytes / 1e6:.1f} MB) of reads made "
        f"before {before:%Y-%m-%d %H:%M} UTC (retention {keep} days)"
    )


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection string without the password, and the environment that carries
    it (never on a command line, where ``ps`` shows it)."""
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    conninfo = url.set(drivername="postgresql", password=None)
    return conninfo.render_as_string(hide_password=False), env


def _run(command: list[str], env: dict[str, str]) -> None:
    if shutil.which(command[0]) is None:
        raise fail(f"{command[0]} not found: install the PostgreSQL client (postgresql-client)")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise fail(f"{command[0]} failed: {done.stderr.strip()}")


@db_app.command("backup")
def db_backup(
    output: Annotated[Path, typer.Argument(help="Backup file to write (must not exist).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Write a consistent backup of the audit database while the service runs.

    SQLite: SQLite's online backup (a database file). PostgreSQL: pg_dump's custom
    format (restore with `tonle db restore` or pg_restore).

    Example: tonle db backup /backups/tonle-2026-01-31.dump
    """
    url = _url(database_url)
    if output.exists():
        raise fail(f"{output} exists; a backup never overwrites a file", EXIT_BAD_INPUT)
    if not output.parent.is_dir():
        raise fail(f"{output.parent} is not a folder: create it first", EXIT_BAD_INPUT)
    if url.get_backend_name() == "sqlite":
        if not url.database or not Path(url.database).is_file():
            raise fail(f"no SQLite database at {url.database!r}", EXIT_BAD_INPUT)
        source = sqlite3.connect(url.database)
        target = sqlite3.connect(output)
        try:
            source.backup(target)
            (check,) = target.execute("PRAGMA integrity_check").fetchone()
        finally:
            target.close()
            source.close()
        if check != "ok":
            output.unlink()
            raise fail(f"the backup failed its integrity check: {check}")
    else:
        conninfo, env = _libpq(url)
        _run(["pg_dump", "--format=custom", "--no-owner", "--file", str(output), conninfo], env)
    console.print(f"backed up the audit database to {output}")


def _check_sqlite_backup(backup: Path) -> None:
    """Exit 4 unless ``backup`` is a SQLite file holding a Tonle audit database."""
    try:
        with closing(sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError:
        raise fail(f"{backup} is not a SQLite backup (`tonle db backup` writes one)",
                   EXIT_BAD_INPUT) from None  # fmt: skip
    if "alembic_version" not in tables:
        raise fail(f"{backup} holds no Tonle audit database", EXIT_BAD_INPUT)


@db_app.command("restore")
def db_restore(
    backup: Annotated[Path, typer.Argument(help="A file written by `tonle db backup`.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Restore a backup into an empty database, then bring it to the shipped schema.

    SQLite: the database file must not exist. PostgreSQL: the database must exist and
    hold no tables (create it first). Stop the service before restoring over its data.

    Example: tonle db restore tonle-2026-01-31.dump --database-url postgresql+psycopg://db/new
    """
    from sqlalchemy import create_engine, inspect

    url = _url(database_url)
    if not backup.is_file():
        raise fail(f"no backup file {backup}", EXIT_BAD_INPUT)
    if url.get_backend_name() == "sqlite":
        if not url.database or Path(url.database).exists():
            raise fail(f"{url.database!r} exists: restore into a new file", EXIT_BAD_INPUT)
        _check_sqlite_backup(backup)
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(backup)
        target = sqlite3.connect(url.database)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
    else:
        engine = create_engine(url.set(drivername="postgresql+psycopg"))
        try:
            tables = inspect(engine).get_table_names()
        finally:
            engine.dispose()
        if tables:
            raise fail(f"the target database is not empty ({len(tables)} tables)", EXIT_BAD_INPUT)
        conninfo, env = _libpq(url)
        _run(["pg_restore", "--no-owner", "--exit-on-error", "--single-transaction",
              "--dbname", conninfo, str(backup)], env)  # fmt: skip
    store = open_store(database_url)  # migrates a backup taken before an upgrade
    count = store.count()
    store.close()
    out.print(f"restored {count} audit row(s) from {backup}")


@apikey_app.command("create")
def apikey_create(
    tenant: Annotated[str, typer.Option(help="Tenant (hospital or site) the key acts for.")],
    name: Annotated[str, typer.Option(help="What uses the key, e.g. 'lab system'.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key; the key is printed once and only its hash is stored.

    Example: tonle apikey create --tenant kampong-cham --name "lab system"
    """
    store = open_store(database_url)
    try:
        info, key = store.create_api_key(tenant, name)
    except ValueError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from None
    finally:
        store.close()
    console.print(
        f"created key {info.key_id} for tenant {tenant!r}; store it now, it is not shown again"
    )
    out.print(key, highlight=False)


@apikey_app.command("list")
def apikey_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List API keys (ids, tenants, names, dates; never secrets).

    Example: tonle apikey list --tenant kampong-cham
    """
    store = open_store(database_url)
    keys = store.list_api_keys(tenant)
    store.close()
    if as_json:
        out.print_json(json.dumps([json.loads(k.model_dump_json()) for k in keys]))
        return
    table = Table("key id", "tenant", "name", "created", "revoked")
    for key in keys:
        revoked = f"{key.revoked:%Y-%m-%d %H:%M}" if key.revoked else ""
        table.add_row(key.key_id, key.tenant, key.name, f"{key.created:%Y-%m-%d %H:%M}", revoked)
    out.print(table)


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id shown by `tonle apikey list`.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an API key at once; exit 1 if no active key has that id.

    Example: tonle apikey revoke 3f2a9c0d1e4b5a6c
    """
    store = open_store(database_url)
    revoked = store.revoke_api_key(key_id)
    store.close()
    if not revoked:
        raise fail(f"no active API key with id {key_id!r}")
    out.print(f"revoked {key_id}")


@audit_app.command("export")
def audit_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="NDJSON file to write.")],
    since: Annotated[
        str | None,
        typer.Option(
            help="Only rows created at or after this ISO date or date-time (UTC if no zone)."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Only rows created before this ISO date or date-time (UTC if no zone)."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Export audit rows as FHIR AuditEvent NDJSON (IHE Basic Audit Log Patterns).

    Example: tonle audit export --since 2026-01-01 -o audit-2026.ndjson
    """
    from serving.audit.fhir_export import write_ndjson

    start, end = parse_when(since, "--since"), parse_when(until, "--until")
    if start is not None and end is not None and end <= start:
        raise fail("--until must be after --since", EXIT_USAGE)
    store = open_store(database_url)
    try:
        count = write_ndjson(store.iter_rows(since=start, until=end), output)
    finally:
        store.close()
    console.print(f"wrote {count} AuditEvent(s) to {output}")
