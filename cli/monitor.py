"""``tonle monitor report``: the weekly monitoring report, from the audit store.

Reads the audit database named by ``--database-url`` or ``TONLE_DATABASE_URL`` (and,
with ``--imaging-results``, the chest X-ray result files) and writes one HTML page:
volume, outcomes, silent-mode answers, no-advice and refusal reasons, accepted /
overridden rates and override reasons, risk bands shown, share of reads flagged per
finding, by site (calling tenant). See :mod:`serving.monitor.report`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from cli.console import EXIT_USAGE, fail, out
from cli.ops import DatabaseUrl, _open, _when

__all__ = ["monitor_app", "register"]

monitor_app = typer.Typer(help="Watch models after go-live.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``monitor`` command group to ``app``."""
    app.add_typer(monitor_app, name="monitor")


def _findings(root: Path, since: datetime, until: datetime | None) -> Iterator[tuple[str, bool]]:
    from serving.imaging.results import CxrResult

    for path in sorted((root / "results").glob("*/result.json")):
        try:
            result = CxrResult.model_validate_json(path.read_bytes())
        except (OSError, ValueError):
            continue  # torn by a power loss or removed meanwhile: not a read
        if result.created >= since and (until is None or result.created < until):
            yield from ((f.label, f.flagged) for f in result.findings)


@monitor_app.command("report")
def report(
    since: Annotated[str, typer.Option(help="Start: ISO date or date-time (UTC if no zone).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")],
    until: Annotated[str | None, typer.Option(help="End (exclusive); default: now.")] = None,
    imaging_results: Annotated[
        Path | None,
        typer.Option(help="The imaging results_dir, for the share flagged per finding."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the monitoring report for a period.

    Example: tonle monitor report --since 2026-11-30 -o report.html
    """
    from serving.monitor.report import build_report, render_html

    start = _when(since, "--since")
    end = _when(until, "--until")
    assert start is not None
    if end is not None and end <= start:
        raise fail("--until must be after --since", EXIT_USAGE)
    if imaging_results is not None and not (imaging_results / "results").is_dir():
        raise fail(f"{imaging_results} has no results/ folder (imaging results_dir)", EXIT_USAGE)
    store = _open(database_url)
    try:

        def band_of(card: str) -> str | None:
            found = store.explanation(card)
            if found is None:
                return None
            band = json.loads(found.content).get("band")
            return str(band) if band is not None else None

        feedback = [fb for fb in store.feedback(since=start) if end is None or fb.created < end]
        built = build_report(
            store.iter_rows(since=start, until=end),
            feedback,
            since=start,
            until=end,
            band_of=band_of,
            findings=_findings(imaging_results, start, end) if imaging_results else (),
        )
    finally:
        store.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_html(built), encoding="utf-8")
    calls = sum(s.calls for s in built.services.values())
    out.print(f"wrote {output} ({calls} calls)", highlight=False)
