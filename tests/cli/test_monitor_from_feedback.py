"""``tonle data from-feedback``: labelled rows with provenance, without patient ids."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from cli import app
from serving.audit import AuditRecord, AuditStore
from serving.audit.records import ExplanationRecord, FeedbackRecord, OverrideReason
from serving.cards import OVERRIDE_SYSTEM
from serving.imaging.results import Analysed, ResultStore
from tests.serving.feedback_fixtures import store_feedback
from tests.serving.imaging.results_fixtures import heatmap_source, make_result
from tests.serving.operator_fixtures import record_scrapes

runner = CliRunner()
DAY = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def test_feedback_and_confirmed_reads_become_labelled_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = AuditStore.open(url)
    common = {
        "caller_tenant": "site-a",
        "outcome": "advice",
        "latency_ms": 1.0,
        "model_name": "cvd-risk",
        "model_version": "1.0.0",
        "model_sha256": "a" * 64,
        "patient_ref": "Patient/SECRET-1",
        "created": DAY,
    }
    for card in ("ncd-1", "ncd-2"):
        explanation = ExplanationRecord(
            card_uuid=card,
            service_id="ncd-cvd-risk",
            expires=DAY + timedelta(days=365),
            content=json.dumps(
                {
                    "features": {"age": 62, "sbp": 150.0, "sex": "male"},
                    "dates": {"sbp": "2026-10-01"},
                }
            ),
        )
        store.record(
            AuditRecord(
                request_id=f"req-{card}",
                service_id="ncd-cvd-risk",
                card_ids=[card],
                explanation=explanation,
                **common,
            )
        )
    read = make_result(patient="SECRET-1", probs=(0.9, 0.8, 0.1, 0.1, 0.1), created=DAY)
    store.record(
        AuditRecord(
            request_id="req-cxr",
            service_id="imaging-cxr-cds",
            card_ids=["cxr-1"],
            imaging_result=ResultStore.record(Analysed(read, heatmap_source()), "site-a"),
            **{**common, "model_name": "cxr-triage"},
        )
    )
    disagree = OverrideReason(system=OVERRIDE_SYSTEM, code="disagree")
    for card, outcome, service in (
        ("ncd-1", "accepted", "ncd-cvd-risk"),
        ("ncd-2", "overridden", "ncd-cvd-risk"),
        ("cxr-1", "overridden", "imaging-cxr-cds"),
        ("unknown", "accepted", "ncd-cvd-risk"),
    ):
        store_feedback(
            store,
            FeedbackRecord(
                card_uuid=card,
                service_id=service,
                outcome=outcome,  # type: ignore[arg-type]
                override_reason=disagree if outcome == "overridden" else None,
                comment="patient SECRET-1 says hi",
                caller_tenant="site-a",
            ),
        )
    record_scrapes(store, 1000, DAY)  # the operators' reads carry no card: not read
    store.close()
    outcomes = tmp_path / "xpert.csv"
    outcomes.write_text("patient_id,date,result\nSECRET-1,2026-11-20,positive\n")
    out = tmp_path / "labels.csv"
    result = runner.invoke(
        app,
        [
            "data",
            "from-feedback",
            "-o",
            str(out),
            "--outcomes",
            str(outcomes),
            "--tenant",
            "site-a",
            "--database-url",
            url,
        ],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "SECRET" not in text  # no patient id, no comment
    assert "2026-10-01" not in text  # no measurement dates
    rows = list(csv.DictReader(text.splitlines()))
    ncd = [r for r in rows if r["kind"] == "ncd"]
    assert [(r["card_id"], r["label"], r["override_reason"]) for r in ncd] == [
        ("ncd-1", "1", ""),
        ("ncd-2", "0", "disagree"),
    ]
    assert ncd[0]["feature_age"] == "62"
    assert ncd[0]["feature_sex"] == "male"
    assert (ncd[0]["model_sha256"], ncd[0]["tenant"]) == ("a" * 64, "site-a")
    cxr_feedback = [
        r for r in rows if r["kind"] == "cxr" and r["label_source"] == "clinician-feedback"
    ]
    assert {r["finding"] for r in cxr_feedback} == {
        "abnormal",
        "tb",
        "nodule",
        "consolidation",
        "effusion",
    }
    assert {r["result_id"] for r in cxr_feedback} == {read.id}
    confirmed = [r for r in rows if r["label_source"] == "outcome"]
    assert [(r["result_id"], r["finding"], r["label"]) for r in confirmed] == [(read.id, "tb", "1")]
    assert float(confirmed[0]["probability"]) == 0.8
    needs_tenant = runner.invoke(
        app,
        [
            "data",
            "from-feedback",
            "-o",
            str(out),
            "--outcomes",
            str(outcomes),
            "--database-url",
            url,
        ],
    )
    assert needs_tenant.exit_code == 2
