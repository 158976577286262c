"""``tonle db``, ``tonle apikey`` and ``tonle audit export`` (FHIR AuditEvent NDJSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from typer.testing import CliRunner

from cli import app
from serving.audit import AuditRecord, AuditStore
from serving.audit.engine import head_revisions
from serving.audit.fhir_export import audit_event
from serving.imaging.results import Analysed, CopyRemoved, ResultStore

runner = CliRunner()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ops.db'}"


def _row(request_id: str, created: datetime, **changes: object) -> AuditRecord:
    values: dict[str, object] = {
        "request_id": request_id,
        "hook_instance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "service_id": "ncd-cvd-risk",
        "card_ids": [f"{request_id}-c1", f"{request_id}-c2"],
        "caller_iss": "https://ehr.example.org",
        "caller_sub": "client-1",
        "caller_tenant": "site-a",
        "model_name": "cvd-risk",
        "model_version": "1.2.0",
        "model_sha256": "a" * 64,
        "input_sha256": "b" * 64,
        "outcome": "advice",
        "patient_ref": "Patient/123",
        "latency_ms": 3.25,
        "created": created,
    }
    values.update(changes)
    return AuditRecord.model_validate(values)


# A row of a call that named no card, caller, model, input or patient (changes may set some).
_BARE = dict.fromkeys(
    ["caller_iss", "caller_sub", "caller_tenant", "model_name", "model_version",
     "model_sha256", "input_sha256", "patient_ref"]
) | {"card_ids": []}  # fmt: skip


def test_db_upgrade_reports_head(db_url: str) -> None:
    result = runner.invoke(app, ["db", "upgrade", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert head_revisions()
    assert all(revision in result.stdout for revision in head_revisions())


def test_apikey_create_list_revoke(db_url: str) -> None:
    created = runner.invoke(
        app, ["apikey", "create", "--tenant", "site-a", "--name", "lab", "--database-url", db_url]
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("tonle_")
    store = AuditStore.open(db_url)
    info = store.check_api_key(key)
    store.close()
    assert info is not None
    assert info.tenant == "site-a"

    listed = runner.invoke(app, ["apikey", "list", "--json", "--database-url", db_url])
    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.stdout)
    assert [e["key_id"] for e in entries] == [info.key_id]
    # The secret is everything after ``tonle_<id>_`` (it may itself hold "_").
    assert key.removeprefix(f"tonle_{info.key_id}_") not in listed.stdout

    revoke = ["apikey", "revoke", info.key_id, "--database-url", db_url]
    assert runner.invoke(app, revoke).exit_code == 0
    assert runner.invoke(app, revoke).exit_code == 1


def test_audit_export_writes_valid_fhir_audit_events(db_url: str, tmp_path: Path) -> None:
    store = AuditStore.open(db_url)
    store.record(_row("r-old", datetime(2025, 12, 31, 23, 0, tzinfo=UTC)))
    store.record(_row("r-advice", datetime(2026, 1, 2, 8, 0, tzinfo=UTC)))
    store.record(
        _row(
            "r-refused",
            datetime(2026, 1, 2, 9, 0, tzinfo=UTC),
            **{**_BARE, "outcome": "refused", "reason": "unauthorized"},
        )
    )
    store.record(
        _row("r-error", datetime(2026, 1, 3, tzinfo=UTC), outcome="error", reason="model-nan")
    )
    store.close()
    output = tmp_path / "audit.ndjson"

    result = runner.invoke(
        app,
        ["audit", "export", "--since", "2026-01-01", "-o", str(output), "--database-url", db_url],
    )

    assert result.exit_code == 0, result.output
    lines = output.read_text().splitlines()
    events = [AuditEvent.model_validate(json.loads(line)) for line in lines]
    assert [e.id for e in events] == ["r-advice", "r-refused", "r-error"]
    assert [e.outcome for e in events] == ["0", "4", "8"]
    assert events[2].outcomeDesc == "error: model-nan"
    advice = events[0]
    assert advice.action == "E"
    assert advice.recorded == datetime(2026, 1, 2, 8, 0, tzinfo=UTC)
    requestor = [a for a in advice.agent if a.requestor]
    assert [(a.who.identifier.system, a.who.identifier.value) for a in requestor] == [
        ("https://ehr.example.org", "client-1")
    ]
    what = [e.what for e in advice.entity]
    assert what[0].reference == "Patient/123"
    assert what[1].identifier.value == "a" * 64
    details = {d.type: d.valueString for d in advice.entity[2].detail}
    assert details["cardIds"] == "r-advice-c1,r-advice-c2"
    assert details["inputSha256"] == "b" * 64
    assert details["tenant"] == "site-a"
    assert [e.what.identifier.value for e in events[1].entity] == ["r-refused"]


def test_an_operators_read_is_exported_as_system_administration() -> None:
    operator = _row(
        "r-scrape",
        datetime(2026, 1, 2, tzinfo=UTC),
        **{
            **_BARE,
            "service_id": "metrics",
            "outcome": "read",
            "caller_iss": "tonle-metrics-token",
        },
    )
    clinical = AuditEvent.model_validate(audit_event(_row("r-advice", operator.created)))
    event = AuditEvent.model_validate(audit_event(operator))
    purposes = [[c.code for c in e.purposeOfEvent[0].coding] for e in (clinical, event)]
    assert purposes == [["TREAT"], ["HSYSADMIN"]]
    assert event.outcome == "0"
    assert event.entity[0].description == "operator request to metrics"


def test_audit_event_id_is_a_valid_fhir_id_for_any_request_id() -> None:
    event = audit_event(_row("req id/with:odd chars", datetime(2026, 1, 1, tzinfo=UTC)))
    assert AuditEvent.model_validate(event).id == event["id"]
    assert len(event["id"]) == 64


def test_audit_export_rejects_bad_dates(db_url: str, tmp_path: Path) -> None:
    args = ["audit", "export", "--since", "last tuesday", "-o", str(tmp_path / "x")]
    result = runner.invoke(app, [*args, "--database-url", db_url])
    assert result.exit_code == 4


def test_db_prune_pixels_dry_run_then_prune(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.serving.imaging.results_fixtures import commit_read, make_result, with_copy

    store = AuditStore.open(db_url)
    old = Analysed(make_result(created=datetime.now(UTC) - timedelta(days=100)), with_copy())
    for read in (old, Analysed(make_result(), with_copy(1))):
        commit_read(store, read)
    store.close()
    monkeypatch.delenv("TONLE_IMAGING_PIXELS_DAYS", raising=False)
    refused = runner.invoke(app, ["db", "prune-pixels", "--database-url", db_url])
    assert refused.exit_code == 2
    assert "TONLE_IMAGING_PIXELS_DAYS is 0" in refused.output

    monkeypatch.setenv("TONLE_IMAGING_PIXELS_DAYS", "90")
    args = ["db", "prune-pixels", "--database-url", db_url]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would empty 1 reader copies (0.2 MB)" in dry.output
    assert "retention 90 days" in dry.output
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "emptied 1 reader copies (0.2 MB)" in done.output
    again = runner.invoke(app, [*args, "--days", "1"])
    assert "emptied 0 reader copies (0.0 MB)" in again.output
    store = AuditStore.open(db_url)
    try:
        with pytest.raises(CopyRemoved):
            ResultStore(store.engine).pixels(old.result.id)
    finally:
        store.close()
