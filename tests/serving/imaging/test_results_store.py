"""Chest X-ray reads in the audit database (SQLite and PostgreSQL): stored with their
audit row, scoped to a tenant, heatmaps drawn from the stored map, format versioned."""

from __future__ import annotations

import gzip
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import insert, update
from sqlalchemy.exc import SQLAlchemyError

from models.cxr_preprocess.display import DisplayValues
from serving.audit import AuditRecord, AuditStore, AuditUnavailable, schema
from serving.imaging.heatmap import HeatmapSource, display_png, grey_png, overlay_png
from serving.imaging.results import Analysed, ResultStore
from tests.serving.db_fixtures import postgres_database
from tests.serving.imaging.results_fixtures import heatmap_source, make_result


@pytest.fixture(params=["sqlite", "postgresql"])
def audit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    if request.param == "sqlite":
        store = AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}")
        yield store
        store.close()
        return
    with postgres_database() as url:
        store = AuditStore.open(url)
        yield store
        store.close()


def _commit(audit: AuditStore, read: Analysed, tenant: str | None) -> None:
    audit.record(
        AuditRecord(
            request_id=uuid.uuid4().hex,
            service_id="imaging-cxr",
            outcome="advice",
            latency_ms=1.0,
            caller_tenant=tenant,
            imaging_result=ResultStore.record(read, tenant),
        )
    )


def test_reads_are_found_only_within_their_tenant(audit: AuditStore) -> None:
    store = ResultStore(audit.engine)
    old = make_result(created=datetime.now(UTC) - timedelta(days=200), sop_instance_uid="1.9.1")
    new = make_result(sop_instance_uid="1.9.2")
    theirs = make_result(sop_instance_uid="1.9.2")  # same patient id, same instance, B
    for result, tenant in ((old, "a"), (new, "a"), (theirs, "b")):
        _commit(audit, Analysed(result, heatmap_source()), tenant)
    assert store.get(new.id, tenant="a") == new
    with pytest.raises(KeyError):
        store.get(new.id, tenant="b")
    with pytest.raises(KeyError):
        store.get(new.id, tenant=None)
    assert [r.id for r in store.for_patient("PAT-001", tenant="a")] == [new.id, old.id]
    assert [r.id for r in store.for_patient("PAT-001", tenant="b")] == [theirs.id]
    assert store.for_patient("PAT-001", tenant=None) == []
    since = datetime.now(UTC) - timedelta(days=90)
    assert [r.id for r in store.for_patient("PAT-001", tenant="a", since=since)] == [new.id]
    latest = store.latest_for_patient("PAT-001", since, tenant="a")
    assert latest is not None
    assert latest.id == new.id
    assert store.latest_for_patient("PAT-002", since, tenant="a") is None
    found = store.for_instance("1.9.2", tenant="b")
    assert found is not None
    assert found.id == theirs.id
    assert store.for_instance("1.9.1", tenant="b") is None
    # A signed link names one read; it finds it and says whose it is.
    linked = store.by_link(theirs.id)
    assert (linked.tenant, linked.result) == ("b", theirs)
    with pytest.raises(KeyError):
        store.by_link("0" * 32)


def test_heatmaps_are_drawn_from_the_stored_map(audit: AuditStore) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((48, 48), dtype=np.float32)
    cam = rng.normal(0.0, 3.0, (6, 6)).astype(np.float32)  # raw maps: any range
    result = make_result()
    _commit(audit, Analysed(result, HeatmapSource.of(image, cam)), "a")
    store = ResultStore(audit.engine)
    assert store.image(result.id) == grey_png(image)  # the 8-bit grey is exactly the image's
    drawn = np.asarray(Image.open(io.BytesIO(store.heatmap(result.id))), dtype=np.int16)
    direct = np.asarray(Image.open(io.BytesIO(overlay_png(image, cam))), dtype=np.int16)
    # Blended over 8-bit grey, the map kept as float16: at most a few levels apart.
    assert np.abs(drawn - direct).max() <= 3
    with pytest.raises(KeyError):
        store.heatmap("0" * 32)


def test_stored_reads_are_append_only(audit: AuditStore) -> None:
    result = make_result()
    _commit(audit, Analysed(result, heatmap_source()), "a")
    table = schema.imaging_results
    with pytest.raises(SQLAlchemyError), audit.engine.begin() as connection:
        connection.execute(update(table).values(tenant="b"))
    assert ResultStore(audit.engine).get(result.id, tenant="a") == result


def test_a_format_this_version_cannot_read_is_unavailable_not_guessed(
    audit: AuditStore,
) -> None:
    row = ResultStore.record(Analysed(make_result(), heatmap_source()), "a")
    values = row.model_dump(exclude={"pixels"}) | {"format": 5, "request_id": "r" * 32}
    with audit.engine.begin() as connection:
        connection.execute(insert(schema.imaging_results).values(**values))
    with pytest.raises(AuditUnavailable, match="format 5"):
        ResultStore(audit.engine).get(row.result_id, tenant="a")


def test_heatmap_source_round_trips_and_rejects_torn_bytes() -> None:
    source = heatmap_source()
    data = source.encode()
    # format 1 part (header, 8-bit image, float16 map), then no labels, no display copy
    assert len(data) == 8 + 64 * 64 + 2 * 8 * 8 + 6 + 2
    again = HeatmapSource.decode(data)
    assert np.array_equal(again.image, source.image)
    assert np.allclose(again.cam, source.cam, atol=1e-3)
    assert again.cams is None
    assert again.display == b""
    for torn in (b"", data[:7], data[:-1], data + b"\0"):
        with pytest.raises(ValueError, match="heatmap source"):
            HeatmapSource.decode(torn)


def test_format_2_keeps_every_label_map_and_the_display_copy() -> None:
    rng = np.random.default_rng(3)
    image = rng.random((64, 64), dtype=np.float32)
    cams = rng.normal(size=(3, 8, 8)).astype(np.float32)
    original = rng.random((900, 700), dtype=np.float32)
    display = display_png(original, longest=512)
    source = HeatmapSource.of(
        image, cams[1], labels=("abnormal", "tb", "nodule"), cams=cams, display=display
    )
    again = HeatmapSource.decode(source.encode(), 2)
    assert again.labels == ("abnormal", "tb", "nodule")
    assert again.cams is not None
    assert again.cams.shape == (3, 8, 8)
    for index in range(3):  # each map scaled 0-1 on its own, kept as float16
        raw = cams[index]
        assert np.allclose(again.cams[index], (raw - raw.min()) / np.ptp(raw), atol=1e-3)
    assert again.display_png() == display
    with Image.open(io.BytesIO(display)) as shown:
        assert shown.size == (398, 512)  # long side 512, aspect kept
        assert shown.mode == "L"
    assert set(again.maps()) == {"abnormal", "tb", "nodule"}
    assert len(again.maps()["tb"]) == 64
    with pytest.raises(ValueError, match="maps of shape"):
        HeatmapSource.of(image, cams[0], labels=("abnormal",), cams=cams)


def _values_source() -> tuple[HeatmapSource, DisplayValues]:
    rng = np.random.default_rng(5)
    # 12-bit values as block sums: more grey levels than 8 bits can hold.
    values = rng.integers(0, 4096 * 16, size=(300, 250)).astype(np.uint16)
    pixels = DisplayValues(values, center=30000.0, width=20000.0)
    cams = rng.normal(size=(2, 8, 8)).astype(np.float32)
    image = rng.random((64, 64), dtype=np.float32)
    source = HeatmapSource.of(image, cams[0], labels=("abnormal", "tb"), cams=cams, pixels=pixels)
    return source, pixels


def test_format_3_keeps_the_originals_values() -> None:
    source, pixels = _values_source()
    assert source.stored_format == 3
    data = source.encode()
    again = HeatmapSource.decode(data, 3)
    assert again.pixels is not None
    assert np.array_equal(again.pixels.values, pixels.values)
    assert (again.pixels.center, again.pixels.width) == (30000.0, 20000.0)
    assert gzip.decompress(again.pixels_gzip() or b"") == pixels.values.astype("<u2").tobytes()
    # image.png: the values at their default window, 8-bit, drawn when asked for
    with Image.open(io.BytesIO(again.display_png())) as shown:
        assert shown.size == (250, 300)
        grey = np.asarray(shown).astype(int)
    low = 30000 - 10000
    expected = np.clip((pixels.values.astype(float) - low) * 255 / 20000 + 0.5, 0, 255)
    assert np.abs(grey - expected.astype(int)).max() <= 1
    for torn in (data[:-1], data + b"\0", data[: -(2 * 300 * 250 + 1)]):
        with pytest.raises(ValueError, match=r"heatmap source|display copy"):
            HeatmapSource.decode(torn, 3)
    bad = bytearray(data)
    at = len(data) - 2 * 300 * 250 - 4  # the window's width: 0 is refused
    bad[at : at + 4] = b"\0\0\0\0"
    with pytest.raises(ValueError, match="invalid window"):
        HeatmapSource.decode(bytes(bad), 3)


def test_format_3_and_2_rows_in_the_store(audit: AuditStore) -> None:
    source, pixels = _values_source()
    new = Analysed(make_result(), source)
    _commit(audit, new, "a")
    store = ResultStore(audit.engine)
    assert store.get(new.result.id, tenant="a") == new.result
    assert gzip.decompress(store.pixels(new.result.id)) == pixels.values.astype("<u2").tobytes()
    # A format-2 row (the display copy as an 8-bit PNG) is shown as it was stored.
    png = display_png(np.full((40, 30), 0.5, np.float32))
    old_source = HeatmapSource.of(np.zeros((64, 64), np.float32), np.ones((8, 8)), display=png)
    old = Analysed(make_result(), old_source)
    _commit(audit, old, "a")
    with audit.engine.connect() as connection:
        stored = connection.execute(
            schema.imaging_results.select().where(
                schema.imaging_results.c.result_id == old.result.id
            )
        ).one()
    assert stored.format == 2
    assert store.image(old.result.id) == png
    with pytest.raises(KeyError):
        store.pixels(old.result.id)  # no values kept: its page loads image.png


def test_format_1_rows_are_still_read(audit: AuditStore) -> None:
    """A read stored by the previous version: one map, the image at model size."""
    result = make_result()
    source = heatmap_source()
    old = source.encode()[: 8 + 64 * 64 + 2 * 8 * 8]  # exactly the format-1 bytes
    row = ResultStore.record(Analysed(result, source), "a").model_dump(exclude={"pixels"})
    values = row | {"format": 1, "heatmap": old, "request_id": "r" * 32}
    with audit.engine.begin() as connection:
        connection.execute(insert(schema.imaging_results).values(**values))
    store = ResultStore(audit.engine)
    assert store.get(result.id, tenant="a") == result
    assert store.image(result.id) == source.image_png()  # no display copy: model input
    assert store.source(result.id).maps() == {}
    with pytest.raises(ValueError, match="heatmap source"):
        HeatmapSource.decode(source.encode(), 1)  # format-2 bytes are not format 1
