"""``tonle monitor report``: the weekly monitoring report, from the audit store.

Reads the audit database named by ``--database-url`` or ``TONLE_DATABASE_URL`` (audit
rows, feedback, retained explanations and the stored chest X-ray reads) and writes one
HTML page:
volume, outcomes, silent-mode answers, no-advice and refusal reasons, accepted /
overridden rates and override reasons, risk bands shown, share of reads flagged per
finding, by site (calling tenant). See :mod:`serving.monitor.report`.
"""

from __future__ import annotations

import json
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


@monitor_app.command("report")
def report(
    since: Annotated[str, typer.Option(help="Start: ISO date or date-time (UTC if no zone).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")],
    until: Annotated[str | None, typer.Option(help="End (exclusive); default: now.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the monitoring report for a period.

    Example: tonle monitor report --since 2026-11-30 -o report.html
    """
    from serving.monitor.reads import findings, iter_reads
    from serving.monitor.report import build_report, render_html

    start = _when(since, "--since")
    end = _when(until, "--until")
    assert start is not None
    if end is not None and end <= start:
        raise fail("--until must be after --since", EXIT_USAGE)
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
            findings=findings(iter_reads(store.engine, start, end)),
        )
    finally:
        store.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_html(built), encoding="utf-8")
    calls = sum(s.calls for s in built.services.values())
    out.print(f"wrote {output} ({calls} calls)", highlight=False)
