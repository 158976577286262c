"""The weekly monitoring report a programme manager reads, from the audit store.

Everything is counted from what the service already keeps: audit rows (volume, outcome,
mode, reason codes, the tenant that called), clinicians' feedback (accepted /
overridden and the coded override reason), the NCD explanations still retained (the
risk band each card showed) and the stored chest X-ray reads (the share
of reads flagged per finding). Nothing here runs on the request path.

"By site": an audit row names the calling tenant (one EHR / site), so per-site figures
are per tenant. The operators' own reads (``/metrics``, ``/readyz/detail``,
``/ui/monitor``: :data:`~serving.audit.records.OPERATOR_SERVICES`) are not calls of the
service's users and are left out by the query (``AuditStore.iter_rows(...,
exclude_services=OPERATOR_SERVICES)``): a scrape every 15 s is most of the rows.
"""

from __future__ import annotations

import html
import textwrap
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from serving.audit.records import AuditRecord, FeedbackRecord

__all__ = [
    "MonitorReport",
    "ServiceSummary",
    "build_report",
    "html_table",
    "render_html",
    "render_pdf",
]


@dataclass
class ServiceSummary:
    """One CDS service or route over the period.

    Attributes:
        calls: audit rows.
        outcomes: rows per outcome (advice, no-advice, refused, error).
        silent: rows answered in silent mode.
        cards_shown: cards sent to an EHR (live mode).
        accepted: feedback entries "accepted" on those cards.
        overridden: feedback entries "overridden".
        override_reasons: override reason (display or code) -> count.
        reasons: no-advice / refused / error reason code -> count.
        bands: risk band shown -> count (NCD cards whose explanation is retained).
        tenants: tenant -> outcome -> count.
    """

    service: str
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    silent: int = 0
    cards_shown: int = 0
    accepted: int = 0
    overridden: int = 0
    override_reasons: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    bands: Counter[str] = field(default_factory=Counter)
    tenants: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def rate(self, count: int) -> float | None:
        """``count`` as a share of the cards shown (None when none were shown)."""
        return count / self.cards_shown if self.cards_shown else None


@dataclass
class MonitorReport:
    """What :func:`render_html` shows."""

    since: datetime
    until: datetime | None
    services: dict[str, ServiceSummary]
    volume_by_day: dict[date, int]
    findings: dict[str, tuple[int, int]]  # label -> (reads, flagged)
    # Chest X-ray score drift: (model version, label, reads, PSI); model versions whose
    # reference was not found (serving.monitor.reads.ScoreDrift).
    score_drift: list[tuple[str, str, int, float]] = field(default_factory=list)
    score_drift_missing: list[str] = field(default_factory=list)


def build_report(
    rows: Iterable[AuditRecord],
    feedback: Iterable[FeedbackRecord],
    *,
    since: datetime,
    until: datetime | None = None,
    band_of: Callable[[str], str | None] | None = None,
    findings: Iterable[tuple[str, bool]] = (),
) -> MonitorReport:
    """Count the period's audit rows and feedback.

    Args:
        rows: audit rows of the period, the operators' reads left out.
        feedback: feedback entries of the period.
        since: start of the period.
        until: end of the period (None: now).
        band_of: card uuid -> the risk band its explanation shows (None if purged).
        findings: ``(label, flagged)`` for every chest X-ray finding of the period.
    """
    services: dict[str, ServiceSummary] = {}
    volume: Counter[date] = Counter()
    card_service: dict[str, str] = {}
    for row in rows:
        s = services.setdefault(row.service_id, ServiceSummary(row.service_id))
        s.calls += 1
        s.outcomes[row.outcome] += 1
        s.tenants[row.caller_tenant or "-"][row.outcome] += 1
        volume[row.created.date()] += 1
        if row.reason and row.outcome != "advice":
            s.reasons[f"{row.outcome}: {row.reason.split(':', 1)[0]}"] += 1
        if row.mode == "silent":
            s.silent += 1
        elif row.outcome == "advice":
            s.cards_shown += len(row.card_ids)
            card_service.update(dict.fromkeys(row.card_ids, row.service_id))
        if band_of is not None and row.outcome == "advice":
            for card in row.card_ids:
                band = band_of(card)
                if band is not None:
                    s.bands[band] += 1
    for fb in feedback:
        s = services.setdefault(fb.service_id, ServiceSummary(fb.service_id))
        if fb.outcome == "accepted":
            s.accepted += 1
        else:
            s.overridden += 1
            reason = fb.override_reason
            label = (reason.display or reason.code or "coded") if reason else "no reason given"
            s.override_reasons[label] += 1
    read: Counter[str] = Counter()
    flagged: Counter[str] = Counter()
    for label, is_flagged in findings:
        read[label] += 1
        flagged[label] += int(is_flagged)
    return MonitorReport(
        since=since,
        until=until,
        services=dict(sorted(services.items())),
        volume_by_day=dict(sorted(volume.items())),
        findings={label: (read[label], flagged[label]) for label in sorted(read)},
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def html_page(title: str, body: list[str]) -> str:
    """One self-contained HTML page: ``title`` in the head, ``body`` (HTML) as written."""
    head = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title><style>body{{font-family:sans-serif;max-width:1100px;"
        "margin:auto}table{border-collapse:collapse;font-size:13px;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
    )
    return "\n".join([head, *body, "</body></html>"])


def table_of(head: list[str], rows: list[dict[str, object]]) -> str:
    """:func:`html_table` of the ``head`` columns of ``rows``: floats to 3 places, None as '-'."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return "-" if value is None else str(value)

    return html_table(head, [[cell(row[h]) for h in head] for row in rows])


def html_table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table of ``rows`` under ``head``, every cell escaped."""
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return (
        "<table><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + f"</tr>{cells}</table>"
    )


def _bars(volume: dict[date, int]) -> str:
    """An inline SVG bar chart of calls per day (no plotting library on the server)."""
    if not volume:
        return "<p>No calls in this period.</p>"
    top = max(volume.values())
    width, height = 24, 120
    bars = []
    for i, (day, count) in enumerate(volume.items()):
        h = round(height * count / top)
        bars.append(
            f"<rect x='{i * width + 2}' y='{height - h}' width='{width - 4}' height='{h}' "
            f"fill='#4a7ab5'><title>{day.isoformat()}: {count}</title></rect>"
        )
    return (
        f"<svg role='img' aria-label='calls per day' width='{len(volume) * width}' "
        f"height='{height}'>{''.join(bars)}</svg>"
    )


def render_html(report: MonitorReport) -> str:
    """The report as one self-contained HTML page."""
    until = report.until.isoformat() if report.until else "now"
    parts = [
        "<h1>Tonle monitoring report</h1>",
        f"<p>Period: {html.escape(report.since.isoformat())} to {html.escape(until)}.</p>",
        "<h2>Volume</h2>",
        _bars(report.volume_by_day),
    ]
    summary = []
    for s in report.services.values():
        summary.append(
            [
                s.service, str(s.calls), str(s.outcomes["advice"]), str(s.outcomes["no-advice"]),
                str(s.outcomes["refused"]), str(s.outcomes["error"]), str(s.silent),
                str(s.cards_shown), _pct(s.rate(s.accepted)), _pct(s.rate(s.overridden)),
            ]
        )  # fmt: skip
    parts.append(
        html_table(
            [
                "service",
                "calls",
                "advice",
                "no advice",
                "refused",
                "error",
                "silent",
                "cards shown",
                "accepted",
                "overridden",
            ],
            summary,
        )
    )
    parts.append(
        "<p>Accepted / overridden: feedback entries as a share of the cards sent to an "
        "EHR (silent-mode cards are stored but never shown).</p>"
    )
    for title, attr in (
        ("Reasons for no advice, refusals and errors", "reasons"),
        ("Override reasons", "override_reasons"),
        ("Risk band shown (NCD cards)", "bands"),
    ):
        rows = [
            [s.service, key, str(count)]
            for s in report.services.values()
            for key, count in getattr(s, attr).most_common()
        ]
        if rows:
            parts += [f"<h2>{title}</h2>", html_table(["service", "", "count"], rows)]
    if report.findings:
        parts.append("<h2>Chest X-ray: share of reads flagged, per finding</h2>")
        parts.append(
            html_table(
                ["finding", "reads", "flagged", "share flagged"],
                [
                    [label, str(n), str(k), _pct(k / n if n else None)]
                    for label, (n, k) in report.findings.items()
                ],
            )
        )
    parts += _score_drift_html(report)
    tenants = [
        [tenant, s.service, str(sum(c.values())), str(c["advice"]), str(c["no-advice"]),
         str(c["refused"]), str(c["error"])]
        for s in report.services.values()
        for tenant, c in sorted(s.tenants.items())
    ]  # fmt: skip
    if tenants:
        parts += [
            "<h2>By site (calling tenant)</h2>",
            html_table(
                ["tenant", "service", "calls", "advice", "no advice", "refused", "error"], tenants
            ),
        ]
    return html_page("Tonle monitoring report", parts)


_DRIFT_TITLE = "Chest X-ray score drift (PSI against the model's reference)"
_DRIFT_HEAD = ["model", "finding", "reads", "PSI", "shift"]
_DRIFT_NOTE = (
    "Calibrated scores of the period's reads against those the model gave its validation "
    "images; below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 major. Image statistics "
    "are watched live (/metrics, /ui/monitor)."
)


def _score_drift_cells(report: MonitorReport) -> list[list[str]]:
    return [[tag, label, str(n), f"{value:.3f}", _shift(value)]
            for tag, label, n, value in report.score_drift]  # fmt: skip


def _no_reference(report: MonitorReport) -> str:
    return (
        f"No reference for {', '.join(report.score_drift_missing)}: not in this machine's "
        "model store, or the artifact records none."
    )


def _score_drift_html(report: MonitorReport) -> list[str]:
    """The chest X-ray score drift section (nothing when there were no such reads)."""
    if not report.score_drift and not report.score_drift_missing:
        return []
    parts = [f"<h2>{html.escape(_DRIFT_TITLE, quote=False)}</h2>"]
    if report.score_drift:
        parts.append(html_table(_DRIFT_HEAD, _score_drift_cells(report)))
    parts.append(f"<p>{_DRIFT_NOTE}</p>")
    if report.score_drift_missing:
        parts.append(f"<p>{html.escape(_no_reference(report), quote=False)}</p>")
    return parts


def _shift(value: float) -> str:
    return "major" if value > 0.25 else "moderate" if value >= 0.1 else "stable"


def render_pdf(report: MonitorReport, path: Path) -> None:
    """The report as a PDF (matplotlib: the ``train`` extra), for printing or mailing.

    Page 1: the period, the per-service table and calls per day; then, when there were
    chest X-ray reads, the share flagged per finding and the score drift (as the HTML).

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    until = report.until.isoformat() if report.until else "now"
    head = ["service", "calls", "advice", "no advice", "refused", "error", "silent",
            "accepted", "overridden"]  # fmt: skip
    cells = [
        [s.service, str(s.calls), str(s.outcomes["advice"]), str(s.outcomes["no-advice"]),
         str(s.outcomes["refused"]), str(s.outcomes["error"]), str(s.silent),
         _pct(s.rate(s.accepted)), _pct(s.rate(s.overridden))]
        for s in report.services.values()
    ]  # fmt: skip
    with PdfPages(path) as pdf:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.27, 11.69))
        fig.suptitle(f"Tonle monitoring report\n{report.since.isoformat()} to {until}")
        top.axis("off")
        if cells:
            table = top.table(cellText=cells, colLabels=head, loc="upper center")
            table.auto_set_font_size(False)
            table.set_fontsize(7)
        else:
            top.text(0.5, 0.5, "No calls in this period.", ha="center")
        days = list(report.volume_by_day)
        bottom.bar([d.isoformat() for d in days], [report.volume_by_day[d] for d in days])
        bottom.set_title("Calls per day")
        bottom.tick_params(axis="x", labelrotation=90, labelsize=7)
        fig.tight_layout()
        pdf.savefig(fig)
        plt.close(fig)
        if report.findings:
            fig, ax = plt.subplots(figsize=(8.27, 5))
            labels = list(report.findings)
            shares = [100 * k / n if n else 0.0 for n, k in report.findings.values()]
            ax.barh(labels, shares)
            ax.set_xlabel("% of reads flagged")
            ax.set_title("Chest X-ray: share of reads flagged, per finding")
            fig.tight_layout()
            pdf.savefig(fig)
            plt.close(fig)
        if report.score_drift or report.score_drift_missing:
            fig, ax = plt.subplots(figsize=(8.27, 11.69))
            ax.axis("off")
            ax.set_title(_DRIFT_TITLE)
            if report.score_drift:
                table = ax.table(
                    cellText=_score_drift_cells(report), colLabels=_DRIFT_HEAD, loc="upper center"
                )
                table.auto_set_font_size(False)
                table.set_fontsize(8)
            notes = [_DRIFT_NOTE] + ([_no_reference(report)] if report.score_drift_missing else [])
            fig.text(0.08, 0.05, "\n\n".join(textwrap.fill(n, 95) for n in notes), fontsize=8)
            pdf.savefig(fig)
            plt.close(fig)
