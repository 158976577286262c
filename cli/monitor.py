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
  realised sensitivity, specificity and calibration (:mod:`serving.monitor.outcomes`);
  with ``--service``, incident CVD events or diabetes diagnoses joined to one tenant's
  NCD cards: observed against expected risk per band (:mod:`serving.monitor.ncd_outcomes`).
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

    from serving.audit.records import OPERATOR_SERVICES
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
            store.iter_rows(since=start, until=end, exclude_services=OPERATOR_SERVICES),
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
    service: Annotated[
        str | None,
        typer.Option(
            help="An NCD service: join events (CSV patient_id,date,outcome) to its cards."
        ),
    ] = None,
    followed_until: Annotated[
        str | None,
        typer.Option(help="With --service: the date up to which the file is complete."),
    ] = None,
    codes: Annotated[
        str | None,
        typer.Option(help="With --service: event codes, comma-separated ('I21*': a prefix)."),
    ] = None,
    horizon_years: Annotated[
        float,
        typer.Option(min=0.5, max=10.0, help="With --service: years (below 10: constant hazard)."),
    ] = 10.0,
    database_url: DatabaseUrl = None,
) -> None:
    """Realised accuracy: later bacteriology joined to one tenant's chest X-ray reads.

    Writes realised sensitivity, specificity and calibration over time and by subgroup.

    Writes OUTDIR/performance.csv, OUTDIR/calibration.csv and OUTDIR/outcomes.html.
    Example: tonle monitor outcomes xpert.csv --tenant site-a -o outcomes/

    With --service (an NCD service), FILE lists incident events instead, joined to the
    cards that service showed the tenant: observed against expected risk per risk band
    (Kaplan-Meier, censored follow-up never counted as negative), written to
    OUTDIR/ncd_calibration.csv and OUTDIR/ncd_outcomes.html.
    Example: tonle monitor outcomes events.csv --tenant site-a --service ncd-cvd-risk
    --followed-until 2026-11-30 -o outcomes/
    """
    if service is not None:
        _ncd_outcomes(file, tenant, output, service, followed_until, codes, horizon_years,
                      database_url)  # fmt: skip
        return
    if followed_until is not None or codes is not None:
        raise fail("--followed-until and --codes go with --service", EXIT_USAGE)
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


def _ncd_outcomes(
    file: Path,
    tenant: str,
    output: Path,
    service: str,
    followed_until: str | None,
    codes: str | None,
    horizon_years: float,
    database_url: str | None,
) -> None:
    from serving.monitor.ncd_outcomes import (
        DEFAULT_CODES,
        band_calibration,
        cards_shown,
        follow,
        ncd_services,
        read_records,
    )
    from serving.monitor.outcomes import OutcomeError

    until = parse_when(followed_until, "--followed-until")
    if until is None:
        raise fail("--service needs --followed-until (the date the file is complete to)",
                   EXIT_USAGE)  # fmt: skip
    try:
        records = read_records(file)
    except UnicodeDecodeError:
        raise fail(f"{file} is not UTF-8 text (save it as 'CSV UTF-8')", EXIT_BAD_INPUT) from None
    except (OSError, csv.Error) as exc:
        raise fail(f"cannot read {file}: {type(exc).__name__}", EXIT_BAD_INPUT) from None
    except OutcomeError as exc:
        raise fail(f"{file}: {exc}", EXIT_BAD_INPUT) from None
    store = open_store(database_url)
    try:
        known = ncd_services(store.engine, tenant=tenant)
        if service not in known:
            raise fail(f"--service {service!r} gave site {tenant!r} no NCD cards; NCD services "
                       f"with cards there: {', '.join(known) or 'none'}", EXIT_USAGE)  # fmt: skip
        cards, expired = cards_shown(store.engine, tenant=tenant, service=service)
    finally:
        store.close()
    wanted = [c.strip()[:64] for c in codes.split(",") if c.strip()] if codes else []
    outcomes = sorted({c.outcome for c in cards})
    if not wanted:
        if len(outcomes) > 1 or (outcomes and outcomes[0] not in DEFAULT_CODES):
            raise fail(f"{service} cards predict {outcomes}: give --codes", EXIT_USAGE)
        wanted = list(DEFAULT_CODES[outcomes[0] if outcomes else "cvd"])
    followed, counts = follow(cards, records, codes=wanted, followed_until=until.date(),
                              horizon_years=horizon_years)  # fmt: skip
    rows = band_calibration(followed, horizon_years)
    output.mkdir(parents=True, exist_ok=True)
    _write_csv(output / "ncd_calibration.csv", rows)
    summary = (
        f"{len(cards)} cards with a stored risk ({expired} more whose explanation was purged: "
        f"not counted), {counts['repeat']} later cards of the same patients not counted "
        f"again, {len(followed)} patients; {counts['other_codes']} outcome rows with other "
        f"codes ignored. Events: {', '.join(wanted)}. Horizon {horizon_years:g} years"
        + ("" if horizon_years == 10.0 else " (10-year risks scaled: constant hazard)")
        + f"; the file is taken as complete to {until.date().isoformat()}."
    )
    (output / "ncd_outcomes.html").write_text(
        _ncd_html(service, tenant, summary, rows), encoding="utf-8"
    )
    out.print(f"wrote {output}: {summary}", highlight=False)


def _ncd_html(service: str, tenant: str, summary: str, rows: list[dict[str, object]]) -> str:
    from html import escape

    from serving.monitor.report import html_page, table_of

    head = ["group", "band", "patients", "events", "complete", "censored", "prior",
            "mean_predicted", "observed", "observed_low", "observed_high", "o_e"]  # fmt: skip
    return html_page(
        "Tonle NCD outcomes",
        [
            f"<h1>Observed against expected risk: {escape(service)}, site "
            f"{escape(tenant or '-')}</h1>",
            f"<p>{escape(summary)}</p>",
            "<p>One row per patient's first card. Observed: Kaplan-Meier risk by the "
            "horizon with its 95 % interval; patients followed for less than the horizon "
            "without an event are censored (not negatives); '-': nobody in the band was "
            "followed to the horizon. Prior: the event was recorded on or before the card "
            "(excluded). O/E: observed / mean predicted.</p>",
            table_of(head, rows),
        ],
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

    from serving.monitor.report import html_page, table_of

    perf_head = ["group", "period", "n", "tp", "fp", "tn", "fn", "sensitivity",
                 "sensitivity_low", "sensitivity_high", "specificity", "specificity_low",
                 "specificity_high"]  # fmt: skip
    calib_head = ["bin_low", "bin_high", "n", "mean_predicted", "observed"]
    return html_page(
        "Tonle outcomes",
        [
            f"<h1>Realised accuracy: {escape(finding)}, site {escape(tenant or '-')}</h1>",
            f"<p>{total} outcomes, {total - unmatched} joined to a read; {unmatched} had no "
            "read in the window (not counted). Flagged = the threshold each read applied. "
            "Wilson 95 % intervals.</p>",
            "<h2>Sensitivity and specificity, by group and month</h2>",
            table_of(perf_head, rows),
            "<h2>Calibration (probability deciles)</h2>",
            table_of(calib_head, calib),
        ],
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
        rows_by_card = store.rows_of_cards({fb.card_uuid for fb in entries})

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
