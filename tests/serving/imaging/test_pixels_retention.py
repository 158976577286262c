"""The reader's copy of a chest X-ray is kept apart from the read (SQLite and PostgreSQL):
stored in the read's transaction, emptied after the site's retention (never anything
else), and the read, its card and heatmap still open afterwards."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Engine, Table, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette

from models.cxr_preprocess.display import DisplayValues
from serving.audit import AuditStore, DuplicateRequest, schema
from serving.audit import engine as engine_module
from serving.audit import pixels as pixels_module
from serving.audit.engine import current_revisions, head_revisions
from serving.audit.pixels import Pruned
from serving.imaging.heatmap import HeatmapSource, pack_pixels
from serving.imaging.results import Analysed, CopyRemoved, ResultStore
from serving.imaging.routes import routes as imaging_routes
from serving.ui.routes import routes as ui_routes
from tests.serving.db_fixtures import postgres_schema
from tests.serving.imaging.conftest import AppFactory, Client, fake_runtime
from tests.serving.imaging.results_fixtures import commit_read, make_result, with_copy


@pytest.fixture
def audit(db_url: str) -> Iterator[AuditStore]:
    """The store on either database (in this module also what ``make_app`` serves)."""
    store = AuditStore.open(db_url)
    yield store
    store.close()


def _read(audit: AuditStore, days_old: float, seed: int = 0) -> Analysed:
    created = datetime.now(UTC) - timedelta(days=days_old)
    read = Analysed(make_result(created=created), with_copy(seed))
    commit_read(audit, read)
    return read


def _as_stored(source: HeatmapSource) -> HeatmapSource:
    """``source`` as a stored read keeps it (its maps as float16)."""
    return HeatmapSource.decode(source.encode(), 3)


def _count(audit: AuditStore, table: Table) -> int:
    with audit.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_the_copy_is_stored_apart_in_the_transaction_of_the_read(audit: AuditStore) -> None:
    read = _read(audit, 0)
    source = read.heatmap
    assert source.pixels is not None
    with audit.engine.connect() as connection:
        stored = connection.execute(select(schema.imaging_results)).one()
        copy = connection.execute(select(schema.imaging_pixels)).one()
    assert stored.format == 4
    assert len(stored.heatmap) < 10_000  # maps and the analysed image, not the copy
    assert bytes(copy.data) == pack_pixels(source.pixels)
    assert copy.removed is None
    store = ResultStore(audit.engine)
    again = store.source(read.result.id)
    assert again.pixels is not None
    assert np.array_equal(again.pixels.values, source.pixels.values)
    assert again.maps() == _as_stored(source).maps()
    # A failed audit row leaves neither the read nor its copy (one transaction) ...
    taken = uuid.uuid4().hex
    commit_read(audit, Analysed(make_result(), with_copy(1)), taken)
    with pytest.raises(DuplicateRequest):
        commit_read(audit, Analysed(make_result(), with_copy(2)), taken)
    # ... and a read that cannot be stored (its id taken) leaves no audit row or copy.
    rows = audit.count()
    with pytest.raises(DuplicateRequest):
        commit_read(audit, read)
    assert audit.count() == rows
    assert _count(audit, schema.imaging_results) == _count(audit, schema.imaging_pixels) == 2


def test_prune_empties_only_copies_older_than_the_limit(audit: AuditStore) -> None:
    old, recent = _read(audit, 100, seed=1), _read(audit, 10, seed=2)
    store = ResultStore(audit.engine)
    kept = store.pixels(old.result.id)
    before = audit.pixels_cutoff(30)
    size = len(pack_pixels(old.heatmap.pixels))
    # A dry run says what would go and changes nothing.
    assert audit.pixels_to_prune(before) == Pruned(1, size)
    assert audit.pixels_to_prune(before) == Pruned(1, size)
    assert store.pixels(old.result.id) == kept
    assert audit.prune_pixels(before) == Pruned(1, size)
    assert audit.prune_pixels(before) == Pruned(0, 0)
    assert audit.pixels_to_prune(before) == Pruned(0, 0)
    # The recent copy stays; the old read opens without its copy and says when it went.
    assert store.pixels(recent.result.id)
    with pytest.raises(CopyRemoved) as gone:
        store.pixels(old.result.id)
    assert abs(gone.value.removed - datetime.now(UTC)) < timedelta(minutes=1)
    assert store.kept_source(old.result.id)[1] == gone.value.removed
    assert store.kept_source(recent.result.id)[1] is None
    assert store.get(old.result.id, tenant="a") == old.result
    source = store.source(old.result.id)
    assert source.pixels is None
    assert source.maps() == _as_stored(old.heatmap).maps()
    assert store.heatmap(old.result.id) == _as_stored(old.heatmap).overlay_png()
    with Image.open(io.BytesIO(store.image(old.result.id))) as shown:
        assert shown.size == (64, 64)  # the analysed image, as reads without a copy show
    # Both rows stay: the read is the record, the emptied copy says when it went.
    assert _count(audit, schema.imaging_results) == _count(audit, schema.imaging_pixels) == 2


def test_the_service_empties_one_batch_at_a_time(
    audit: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pixels_module, "BATCH", 2)
    reads = [_read(audit, 40 + i, seed=i) for i in range(5)]
    before = audit.pixels_cutoff(30)
    assert audit.prune_pixels(before, batches=1).copies == 2  # the oldest first
    assert [ResultStore(audit.engine).kept_source(r.result.id)[1] is None for r in reads] == [
        True,
        True,
        True,
        False,
        False,
    ]
    audit.pixels_days = 30  # TONLE_IMAGING_PIXELS_DAYS: with the other expiring rows
    audit.explanation("no-such-card")
    assert audit.pixels_to_prune(before).copies == 1
    assert audit.prune_pixels(before) == Pruned(1, len(pack_pixels(reads[0].heatmap.pixels)))


def test_a_copy_may_only_be_emptied_and_reads_stay_append_only(audit: AuditStore) -> None:
    read = _read(audit, 0)
    copies, reads = schema.imaging_pixels, schema.imaging_results
    now = datetime.now(UTC)
    refused = [
        update(copies).values(data=b"another image"),
        update(copies).values(data=b"another image", removed=None),
        update(copies).values(data=None, removed=now, created=now - timedelta(days=1)),
        update(copies).values(data=None),  # emptied without saying when
        delete(copies),
        update(reads).values(heatmap=b""),
        delete(reads),
    ]
    for statement in refused:
        with pytest.raises(SQLAlchemyError), audit.engine.begin() as connection:
            connection.execute(statement)
    assert ResultStore(audit.engine).pixels(read.result.id)
    if audit.dialect == "sqlite":  # INSERT OR REPLACE would delete the stored copy
        replace = insert(copies).prefix_with("OR REPLACE")
        with pytest.raises(SQLAlchemyError), audit.engine.begin() as connection:
            connection.execute(replace.values(result_id=read.result.id, created=now, data=b"x"))
    assert ResultStore(audit.engine).pixels(read.result.id)


def test_the_migration_keeps_reads_stored_before_it(db_url: str) -> None:
    """A database at the previous head with a read stored as that version did (format
    3: the copy inside the append-only read) upgrades; the read opens as before and is
    never emptied, new reads keep their copy apart."""
    engine = engine_module.make_engine(db_url)
    engine_module.upgrade(engine, "0005_imaging_results")
    assert current_revisions(engine) == ("0005_imaging_results",)
    old = Analysed(make_result(created=datetime.now(UTC) - timedelta(days=400)), with_copy(7))
    row = ResultStore.record(old, "a")
    values = row.model_dump(exclude={"pixels"}) | {"request_id": "r" * 32}
    values |= {"format": 3, "heatmap": old.heatmap.encode()}  # as format 3 wrote it
    with engine.begin() as connection:
        connection.execute(insert(schema.imaging_results).values(**values))
    engine.dispose()

    audit = AuditStore.open(db_url)
    try:
        assert current_revisions(audit.engine) == head_revisions()
        store = ResultStore(audit.engine)
        assert store.get(old.result.id, tenant="a") == old.result
        shown = store.source(old.result.id).pixels
        assert shown is not None
        assert old.heatmap.pixels is not None
        assert np.array_equal(shown.values, old.heatmap.pixels.values)
        new = _read(audit, 400)
        assert audit.prune_pixels(audit.pixels_cutoff(30)).copies == 1  # the new one only
        assert store.pixels(old.result.id)
        with pytest.raises(CopyRemoved):
            store.pixels(new.result.id)
    finally:
        audit.close()


def _smooth_read() -> Analysed:
    """A read whose copy and heatmap source PostgreSQL could compress (a gradient)."""
    values = np.add.outer(np.arange(300), np.arange(250)).astype(np.uint16)
    shown = DisplayValues(values, center=300.0, width=500.0)
    image = np.zeros((64, 64), np.float32)
    source = HeatmapSource.of(image, np.zeros((8, 8), np.float32), pixels=shown)
    return Analysed(make_result(), source)


def _compression(engine: Engine, read: Analysed) -> tuple[str | None, str | None]:
    """How PostgreSQL compressed ``read``'s stored copy and heatmap source (None: not)."""
    query = (
        "SELECT pg_column_compression(p.data), pg_column_compression(r.heatmap) "
        "FROM imaging_pixels p JOIN imaging_results r USING (result_id) WHERE result_id = %s"
    )
    with engine.connect() as connection:
        found = connection.exec_driver_sql(query, (read.result.id,)).one()
    return found[0], found[1]


def test_postgresql_stores_the_images_as_they_are(pg_database: str) -> None:
    """Migration 0007: trying to compress a 0.5 MB copy cost PostgreSQL about 8x the CPU
    of storing it; stored before it the same read is compressed, after it not. (A
    PostgreSQL column setting: SQLite never compresses.)"""
    with postgres_schema(pg_database) as url:
        _stored_before_and_after_0007(url)


def _stored_before_and_after_0007(url: str) -> None:
    engine = engine_module.make_engine(url)
    try:
        engine_module.upgrade(engine, "0006_imaging_pixels")
        audit = AuditStore(engine)
        before = _smooth_read()
        commit_read(audit, before)
        assert _compression(engine, before) == ("pglz", "pglz")
        engine_module.upgrade(engine)
        after = _smooth_read()
        commit_read(audit, after)
        assert _compression(engine, after) == (None, None)
        stored = ResultStore(engine).source(after.result.id).pixels
        assert stored is not None
        assert np.array_equal(stored.values, _smooth_read().heatmap.pixels.values)  # type: ignore[union-attr]
    finally:
        engine.dispose()


def test_a_read_without_a_copy_stores_none() -> None:
    source = HeatmapSource.of(np.zeros((64, 64), np.float32), np.ones((8, 8), np.float32))
    row = ResultStore.record(Analysed(make_result(), source), "a")
    assert (row.format, row.pixels) == (4, None)


def test_the_reader_after_retention(make_app: AppFactory) -> None:
    """The read, its heatmap and page still open; ``/pixels`` answers 410 with why, in
    the page's language, and the page says so (audited as a refused read)."""
    _, state = make_app()
    app = Starlette(routes=[*imaging_routes(), *ui_routes()])
    runtime = fake_runtime(state)
    runtime.settings = SimpleNamespace(
        dev=True, public_url=state.public_url, language="en", imaging_pixels_days=90
    )
    app.state.runtime = runtime
    client = Client(app)
    try:
        read = Analysed(make_result(created=datetime.now(UTC) - timedelta(days=100)), with_copy())
        commit_read(state.audit, read)
        base = f"/ui/explain/cxr/{read.result.id}"
        link = runtime.link_signer.sign
        assert client.get(link(f"{base}/pixels")).status_code == 200
        assert "copy-removed" not in client.get(link(base)).text
        audit = state.audit
        assert audit.prune_pixels(audit.pixels_cutoff(90)).copies == 1

        gone = client.get(link(f"{base}/pixels"))
        assert gone.status_code == 410
        body = gone.json()
        assert (body["error"], body["retention_days"]) == ("image-not-kept", 90)
        assert "no longer kept" in body["message"]
        assert "90 days" in body["message"]
        assert "PACS" in body["message"]
        khmer = client.get(link(f"{base}/pixels") + "&lang=km").json()["message"]
        assert "PACS" in khmer
        assert "90 ថ្ងៃ" in khmer
        page = client.get(link(base))
        assert page.status_code == 200
        assert 'id="copy-removed"' in page.text
        assert "no longer kept" in page.text
        assert '"pixels"' not in page.text  # the reader draws the analysed image
        for image in ("heatmap.png", "image.png"):
            response = client.get(link(f"{base}/{image}"))
            assert (response.status_code, response.headers["content-type"]) == (
                200,
                "image/png",
            )
        outcomes = [(r.service_id, r.outcome, r.reason) for r in audit.rows()]
        assert ("ui-cxr-pixels", "refused", "image-not-kept") in outcomes
    finally:
        client.close()
