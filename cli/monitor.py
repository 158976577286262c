"""Watching models after go-live, from the audit store.

Every command reads the audit database named by ``--database-url`` or
``TONLE_DATABASE_URL`` (audit rows, feedback, retained explanations, stored chest
X-ray reads):

- ``tonle monitor report``: the weekly report (HTML, optionally PDF): volume, outcomes,
  silent-mode answers, no-advice and refusal reasons, accepted / overridden rates and
  override reasons, risk bands shown, share of reads flagged per finding, chest X-ray
  score drift (PSI against the reference of the model in the local model store), by
  site (calling tenant). See :mod:`serving.monitor.report`.
- ``tonle monitor outcomes``: later bacteriology joined to one tenant's reads;
  realised sensitivity, specificity and calibration (:mod:`serving.monitor.outcomes`).
- ``tonle data from-feedback``: labelled rows for the next training round
  (:mod:`serving.monitor.feedback_export`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.console import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_USAGE, fail, out
from cli.ops import DatabaseUrl, open_store, parse_when

if TYPE_CHECKING:
    from serving.monitor.outcomes import Outcome

__all__ = ["monitor_app", "register"]

monitor_app = typer.Typer(help="Watch models after go-live.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``monitor`` command group to ``app``."""
    app.add_typer(monitor_app, name="monitor")


@monitor_app.command("report")
def report(
    since: Annotated[str, typer.Option(help="Start: ISO date or date-time (UTC if no zone).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")],
    until: Annotated[
        str | None, typer.Option(help="End (exclusive): ISO date or date-time; default: now.")
    ] = None,
    pdf: Annotated[
        Path | None, typer.Option(help="Also write the report as PDF (needs matplotlib).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the monitoring report for a period.

    Example: tonle monitor report --since 2026-11-30 -o report.html
    """
    from dataclasses import replace

    from serving.monitor.reads import ScoreDrift, findings, iter_reads
    from serving.monitor.report import build_report, render_html, render_pdf

    start = parse_when(since, "--since")
    end = parse_when(until, "--until")
    assert start is not None
    if end is not None and end <= start:
        raise fail("--until must be after --since", EXIT_USAGE)
    store = open_store(database_url)
    try:

        def band_of(card: str) -> str | None:
            found = store.explanation(card)
            if found is None:
                return None
            band = json.loads(found.content).get("band")
            return str(band) if band is not None else None

        feedback = [fb for fb in store.feedback(since=start) if end is None or fb.created < end]
        drift = ScoreDrift()
        built = build_report(
            store.iter_rows(since=start, until=end),
            feedback,
            since=start,
            until=end,
            band_of=band_of,
            findings=findings(drift.watch(iter_reads(store.engine, start, end))),
        )
        built = replace(
            built, score_drift=drift.rows(), score_drift_missing=sorted(drift.unreferenced)
        )
    finally:
        store.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_html(built), encoding="utf-8")
    if pdf is not None:
        try:
            render_pdf(built, pdf)
        except ImportError:
            raise fail("--pdf needs matplotlib (pip install 'tonle[train]')", EXIT_FAILED) from None
    calls = sum(s.calls for s in built.services.values())
    out.print(f"wrote {output} ({calls} calls)", highlight=False)


@monitor_app.command("outcomes")
def outcomes(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV (patient_id or person_id, date, result; optional sex, age, hiv, "
            "symptoms) or .ndjson."
        ),
    ],
    tenant: Annotated[str, typer.Option(help="The site (tenant) whose reads to join.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write.")],
    finding: Annotated[str, typer.Option(help="The finding the results confirm.")] = "tb",
    window_days: Annotated[
        int, typer.Option(min=1, max=365, help="Reads up to this many days before the test.")
    ] = 90,
    database_url: DatabaseUrl = None,
) -> None:
    """Realised accuracy: later bacteriology joined to one tenant's chest X-ray reads.

    Writes realised sensitivity, specificity and calibration over time and by subgroup.

    Writes OUTDIR/performance.csv, OUTDIR/calibration.csv and OUTDIR/outcomes.html.
    Example: tonle monitor outcomes xpert.csv --tenant site-a -o outcomes/
    """
    from serving.imaging.results import ResultStore
    from serving.monitor.outcomes import calibration, join, performance

    found = _read_outcomes(file)
    if not found:
        raise fail(f"{file} holds no outcomes (a header and no rows?)", EXIT_BAD_INPUT)
    store = open_store(database_url)
    try:
        results = ResultStore(store.engine)
        reads = {p: results.for_patient(p, tenant=tenant) for p in {o.patient for o in found}}
    finally:
        store.close()
    joined, unmatched = join(found, reads, finding=finding, window_days=window_days)
    rows = [p.row() for p in performance(joined)]
    calib = calibration(joined)
    output.mkdir(parents=True, exist_ok=True)
    _write_csv(output / "performance.csv", rows)
    _write_csv(output / "calibration.csv", calib)
    (output / "outcomes.html").write_text(
        _outcomes_html(finding, tenant, len(found), unmatched, rows, calib), encoding="utf-8"
    )
    out.print(
        f"wrote {output}: {len(joined)} of {len(found)} outcomes joined to a read "
        f"({unmatched} without a read of {finding} in the {window_days} days before)",
        highlight=False,
    )


def _read_outcomes(path: Path) -> list[Outcome]:
    """The outcomes in ``path``, or exit 4 with one line saying why not."""
    from serving.monitor.outcomes import OutcomeError, read_outcomes

    try:
        return read_outcomes(path)
    except UnicodeDecodeError:
        raise fail(f"{path} is not UTF-8 text (save it as 'CSV UTF-8')", EXIT_BAD_INPUT) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise fail(f"cannot read {path}: {reason}", EXIT_BAD_INPUT) from None
    except csv.Error as exc:
        raise fail(f"{path} is not a readable CSV: {exc}", EXIT_BAD_INPUT) from None
    except OutcomeError as exc:
        raise fail(f"{path}: {exc}", EXIT_BAD_INPUT) from None


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        if not rows:
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def _outcomes_html(
    finding: str,
    tenant: str,
    total: int,
    unmatched: int,
    rows: list[dict[str, object]],
    calib: list[dict[str, object]],
) -> str:
    from html import escape

    from serving.monitor.report import html_table

    def cell(value: object) -> str:
        return (
            f"{value:.3f}" if isinstance(value, float) else ("-" if value is None else str(value))
        )

    perf_head = ["group", "period", "n", "tp", "fp", "tn", "fn", "sensitivity",
                 "sensitivity_low", "sensitivity_high", "specificity", "specificity_low",
                 "specificity_high"]  # fmt: skip
    calib_head = ["bin_low", "bin_high", "n", "mean_predicted", "observed"]
    return "\n".join(
        [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Tonle outcomes"
            "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
            "padding:2px 6px}</style></head><body>",
            f"<h1>Realised accuracy: {escape(finding)}, site {escape(tenant or '-')}</h1>",
            f"<p>{total} outcomes, {total - unmatched} joined to a read; {unmatched} had no "
            "read in the window (not counted). Flagged = the threshold each read applied. "
            "Wilson 95 % intervals.</p>",
            "<h2>Sensitivity and specificity, by group and month</h2>",
            html_table(perf_head, [[cell(r[h]) for h in perf_head] for r in rows]),
            "<h2>Calibration (probability deciles)</h2>",
            html_table(calib_head, [[cell(r[h]) for h in calib_head] for r in calib]),
            "</body></html>",
        ]
    )


def register_data(data_app: typer.Typer) -> None:
    """Add ``from-feedback`` to the ``tonle data`` group."""
    data_app.command("from-feedback")(from_feedback)


def from_feedback(
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV file to write.")],
    since: Annotated[
        str | None,
        typer.Option(help="Only feedback from this ISO date or date-time (UTC if no zone)."),
    ] = None,
    outcomes_file: Annotated[
        Path | None,
        typer.Option("--outcomes", help="Also reads confirmed by these outcomes (CSV/NDJSON)."),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="With --outcomes: the site whose reads to join.")
    ] = None,
    finding: Annotated[str, typer.Option(help="With --outcomes: the finding.")] = "tb",
    window_days: Annotated[
        int,
        typer.Option(
            min=1, max=365, help="With --outcomes: reads up to this many days before the test."
        ),
    ] = 90,
    database_url: DatabaseUrl = None,
) -> None:
    """Labelled rows for the next training round, from clinicians' feedback and outcomes.

    Accepted and overridden cards, and reads confirmed by outcomes, with provenance
    (model, card or result id, time, tenant). No patient ids or comments.

    Example: tonle data from-feedback -o labels.csv --outcomes xpert.csv --tenant site-a
    """
    from serving.imaging.results import ResultStore
    from serving.monitor.feedback_export import COLUMNS, feedback_rows, outcome_rows
    from serving.monitor.outcomes import join
    from serving.monitor.reads import read_of_request

    start = parse_when(since, "--since")
    if outcomes_file is not None and tenant is None:
        raise fail("--outcomes needs --tenant (outcomes join within one site)", EXIT_USAGE)
    found = []
    if outcomes_file is not None:
        found = _read_outcomes(outcomes_file)
    store = open_store(database_url)
    try:
        entries = store.feedback(since=start)
        cards = {fb.card_uuid for fb in entries}
        rows_by_card = {
            card: row
            for row in store.iter_rows(since=None)
            for card in row.card_ids
            if card in cards
        }

        def explanation_of(card: str) -> str | None:
            found_ex = store.explanation(card)
            return None if found_ex is None else found_ex.content

        out_rows = list(
            feedback_rows(
                entries,
                rows_by_card.get,
                explanation_of,
                lambda request_id: read_of_request(store.engine, request_id),
            )
        )
        if found:
            assert tenant is not None
            results = ResultStore(store.engine)
            reads = {p: results.for_patient(p, tenant=tenant) for p in {o.patient for o in found}}
            joined, _ = join(found, reads, finding=finding, window_days=window_days)
            out_rows += outcome_rows(joined, finding, tenant)
    finally:
        store.close()
    features = sorted({k for r in out_rows for k in r if k.startswith("feature_")})
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*COLUMNS, *features], restval="")
        writer.writeheader()
        writer.writerows(out_rows)
    out.print(f"wrote {output} ({len(out_rows)} labelled rows)", highlight=False)
