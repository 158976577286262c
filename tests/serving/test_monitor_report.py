"""``tonle monitor report``: counts from the audit store, checked on hand-built rows."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from serving.audit import AuditRecord, AuditStore
from serving.audit.records import (
    OPERATOR_SERVICES,
    ExplanationRecord,
    FeedbackRecord,
    OverrideReason,
)
from serving.imaging.results import Analysed, ModelIdentity, ResultStore
from serving.monitor.reads import ScoreDrift, stored_reference
from serving.monitor.report import build_report, render_html, render_pdf
from tests.serving.feedback_fixtures import store_feedback
from tests.serving.imaging.cxr_fixtures import LABELS, make_cxr_artifact
from tests.serving.imaging.results_fixtures import heatmap_source, make_result
from tests.serving.operator_fixtures import record_scrapes
from training.distribution import training_distribution

runner = CliRunner()
DAY = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def row(request_id: str, created: datetime, **changes: object) -> AuditRecord:
    values: dict[str, object] = {
        "request_id": request_id,
        "service_id": "ncd-cvd-risk",
        "card_ids": [f"{request_id}-card"],
        "caller_tenant": "site-a",
        "outcome": "advice",
        "latency_ms": 3.0,
        "created": created,
    }
    values.update(changes)
    return AuditRecord.model_validate(values)


def rows() -> list[AuditRecord]:
    return [
        row("a1", DAY),
        row("a2", DAY + timedelta(hours=1)),
        row("a3", DAY + timedelta(days=1), caller_tenant="site-b"),
        row("a4", DAY + timedelta(days=1), mode="silent"),
        row("n1", DAY, outcome="no-advice", reason="stale-data:sbp", card_ids=[]),
        row("n2", DAY, outcome="no-advice", reason="insufficient-data:sbp", card_ids=[]),
        row("r1", DAY, outcome="refused", reason="invalid-request", card_ids=[]),
        row("x1", DAY, service_id="cxr-triage", card_ids=["x1-card"]),
    ]


def feedback() -> list[FeedbackRecord]:
    override = OverrideReason(system="http://example.org", code="not-relevant", display=None)
    return [
        FeedbackRecord(card_uuid="a1-card", service_id="ncd-cvd-risk", outcome="accepted"),
        FeedbackRecord(
            card_uuid="a2-card",
            service_id="ncd-cvd-risk",
            outcome="overridden",
            override_reason=override,
        ),
    ]


def test_counts_rates_reasons_bands_and_findings() -> None:
    bands = {"a1-card": "10-<20%", "a2-card": "10-<20%", "a3-card": "<5%"}
    report = build_report(
        rows(),
        feedback(),
        since=DAY,
        band_of=bands.get,
        findings=[("tb", True), ("tb", False), ("tb", False), ("nodule", False)],
    )
    cvd = report.services["ncd-cvd-risk"]
    assert cvd.calls == 7
    assert (cvd.outcomes["advice"], cvd.outcomes["no-advice"], cvd.outcomes["refused"]) == (4, 2, 1)
    assert cvd.silent == 1
    assert cvd.cards_shown == 3  # the silent answer's card was never shown
    assert (cvd.accepted, cvd.overridden) == (1, 1)
    assert cvd.rate(cvd.accepted) == 1 / 3
    assert cvd.override_reasons == {"not-relevant": 1}
    assert cvd.reasons == {"no-advice: stale-data": 1, "no-advice: insufficient-data": 1,
                           "refused: invalid-request": 1}  # fmt: skip
    assert cvd.bands == {"10-<20%": 2, "<5%": 1}
    assert cvd.tenants["site-b"]["advice"] == 1
    assert report.services["cxr-triage"].calls == 1
    assert report.volume_by_day == {DAY.date(): 6, (DAY + timedelta(days=1)).date(): 2}
    assert report.findings == {"nodule": (1, 0), "tb": (3, 1)}
    page = render_html(report)
    assert "33.3 %" in page  # tb flagged 1 of 3, and accepted 1 of 3 cards shown
    assert "By site (calling tenant)" in page


def test_the_operators_reads_are_not_counted(tmp_path: Path) -> None:
    """A scrape every 15 s (``/metrics``), the readiness detail and the monitoring page
    are audited, but they are not calls of the service's users: the query leaves them
    out and the report is the one without them."""
    store = AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        for r in rows():
            store.record(r)
        record_scrapes(store, 1000, DAY)
        assert store.count() == len(rows()) + 1000
        users = list(store.iter_rows(since=DAY, chunk=100, exclude_services=OPERATOR_SERVICES))
    finally:
        store.close()
    assert [r.request_id for r in users] == [r.request_id for r in rows()]
    assert build_report(users, feedback(), since=DAY) == build_report(rows(), feedback(), since=DAY)


def test_report_command_reads_the_audit_store(tmp_path: Path, model_store: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = AuditStore.open(url)
    explanation = ExplanationRecord(
        card_uuid="a1-card",
        service_id="ncd-cvd-risk",
        expires=DAY + timedelta(days=365),
        content=json.dumps({"band": "20-<30%"}),
    )
    for r in rows():
        if r.request_id == "a1":
            r = r.model_copy(update={"explanation": explanation})
        store.record(r)
    store.record(row("old", DAY - timedelta(days=30)))
    store.record(row("evil", DAY, caller_tenant="<script>x</script>", card_ids=[]))
    reads = [
        (make_result(probs=(0.9, 0.8, 0.1, 0.1, 0.1), created=DAY), "site-a"),
        (make_result(probs=(0.9, 0.2, 0.1, 0.1, 0.1), created=DAY), "site-b"),
        (make_result(probs=(0.9, 0.9, 0.1, 0.1, 0.1), created=DAY - timedelta(days=30)), "site-a"),
    ]
    for i, (result, tenant) in enumerate(reads):
        imaging = ResultStore.record(Analysed(result, heatmap_source()), tenant)
        store.record(row(f"cxr{i}", result.created, service_id="imaging-cxr", card_ids=[],
                         imaging_result=imaging))  # fmt: skip
    store_feedback(store, *feedback())
    record_scrapes(store, 1000, DAY)  # the operators' reads: not calls
    store.close()
    out = tmp_path / "report" / "week.html"
    pdf = tmp_path / "report" / "week.pdf"
    args = ["monitor", "report", "--since", "2026-11-30", "-o", str(out), "--pdf", str(pdf)]
    result = runner.invoke(app, [*args, "--database-url", url])
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes().startswith(b"%PDF")
    pages = re.findall(rb"/Type\s*/Page(?!s)", pdf.read_bytes())
    assert len(pages) == 3  # the summary, the share flagged per finding, the score drift
    # 8 rows, the hostile one, 2 reads and the feedback call; old rows outside
    assert "(12 calls)" in result.output
    page = out.read_text()
    assert "20-&lt;30%" in page
    assert "<script>x" not in page
    assert "&lt;script&gt;" in page
    # Reads come from the database: tb flagged in 1 of the 2 reads of the period (the
    # older read, flagged, is outside it); abnormal in both.
    assert "<td>tb</td><td>2</td><td>1</td><td>50.0 %</td>" in page
    assert "<td>abnormal</td><td>2</td><td>2</td><td>100.0 %</td>" in page
    # The reads' model is not in this (empty) model store: no score drift, said so.
    assert "No reference for cxr-triage:1.0.0" in page
    gone = runner.invoke(app, ["monitor", "report", "--since", "2026-11-30", "-o", str(out),
                               "--imaging-results", str(tmp_path)])  # fmt: skip
    assert gone.exit_code == 2  # the results-folder option no longer exists
    bad = runner.invoke(app, ["monitor", "report", "--since", "last week", "-o", str(out)])
    assert bad.exit_code == 4
    backwards = runner.invoke(
        app,
        ["monitor", "report", "--since", "2026-12-01", "--until", "2026-11-01", "-o", str(out)],
    )
    assert backwards.exit_code == 2


def test_score_drift_of_the_period_against_the_stored_reference(
    tmp_path: Path, model_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reference: every label's score spread evenly over 0-1 (ten equal bins).
    spread = np.tile(np.linspace(0.0, 1.0, 201)[:, None], (1, len(LABELS)))
    reference = training_distribution(spread, [f"score:{label}" for label in LABELS])
    stored = make_cxr_artifact(tmp_path, version="1.0.0", reference=reference)
    identity = ModelIdentity(name="cxr-triage", version="1.0.0", sha256=stored.metadata.sha256)
    assert stored_reference("cxr-triage", "1.0.0", "ab" * 32) is None  # another artifact
    assert stored_reference("cxr-triage", "1.0.0", identity.sha256) is not None

    drift = ScoreDrift()
    for i in range(40):
        spread_p = (i + 0.5) / 40  # abnormal: as spread as the reference
        read = make_result(probs=(spread_p, 0.95, 0.5, 0.5, 0.5), created=DAY)
        drift.count(read.model_copy(update={"model": identity}))
    drift.count(make_result(created=DAY))  # cxr-triage:1.0.0 of another store: no reference
    rows = {label: (n, value) for _, label, n, value in drift.rows()}
    assert rows["abnormal"][0] == 40
    assert rows["abnormal"][1] < 0.1
    assert rows["tb"][1] > 0.25  # every read in the top bin
    assert drift.unreferenced == {"cxr-triage:1.0.0"}

    report = build_report([], [], since=DAY)
    report = dataclasses.replace(
        report, score_drift=drift.rows(), score_drift_missing=sorted(drift.unreferenced)
    )
    page = render_html(report)
    assert "Chest X-ray score drift" in page
    assert f"<td>cxr-triage:1.0.0</td><td>tb</td><td>40</td><td>{rows['tb'][1]:.3f}</td>" in page
    assert "<td>major</td>" in page
    # The PDF has the same page, from the same rows.
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.text import Text

    texts: list[str] = []
    save = PdfPages.savefig

    def keep(pages: PdfPages, figure: Any = None, **kw: Any) -> None:
        texts.extend(t.get_text() for t in figure.findobj(Text))
        cells = [c for ax in figure.axes for t in ax.tables for c in t.get_celld().values()]
        texts.extend(c.get_text().get_text() for c in cells)
        save(pages, figure, **kw)

    monkeypatch.setattr(PdfPages, "savefig", keep)
    render_pdf(report, tmp_path / "report.pdf")
    assert len(re.findall(rb"/Type\s*/Page(?!s)", (tmp_path / "report.pdf").read_bytes())) == 2
    assert "Chest X-ray score drift (PSI against the model's reference)" in texts
    assert f"{rows['tb'][1]:.3f}" in texts
    assert "major" in texts
    assert any("No reference for cxr-triage:1.0.0" in t for t in texts)
