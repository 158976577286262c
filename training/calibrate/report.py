"""Write a calibration study's outputs: CSV tables, plots and a self-contained HTML report.

Files in the output folder:

* ``thresholds.csv``: the overall table (:data:`~training.calibrate.table.COLUMNS`);
* ``thresholds_by_stratum.csv``: ``stratum,group`` then the same columns, per subgroup;
* ``roc.png``, ``yield_cost.png``: the ROC curve and yield / referral / cost by threshold;
* ``report.html``: the summary a programme reads (plots embedded).
"""

from __future__ import annotations

import base64
import csv
import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.calibrate.cxr import Calibration
from training.calibrate.table import COLUMNS, ThresholdTable

if TYPE_CHECKING:
    from models.site_threshold import SiteThresholdRecord

__all__ = ["format_value", "write_outputs"]

_COUNTS = {"tp", "fp", "tn", "fn", "screened", "with_reference", "referred"}
_MONEY = {"cost_per_case", "cost_per_1000"}
_ESTIMATORS = {
    "complete": "every person screened has a reference result: no verification bias.",
    "ipw-fractions": "rates corrected for verification bias by inverse-probability "
    "weighting with the sampling fractions given (--sampling-fraction).",
    "ipw-weights": "rates corrected for verification bias by inverse-probability "
    "weighting with each person's sampling_weight.",
    "verified-only": "rates counted over the people with a reference result only.",
}


def format_value(name: str, value: float) -> str:
    """One CSV cell: integers for counts, empty for undefined, fixed decimals otherwise."""
    if not math.isfinite(value):
        return ""
    if name in _COUNTS:
        return str(round(value))
    if name == "threshold":
        return f"{value:.10g}"
    if name in _MONEY:
        return f"{value:.2f}"
    if name in {"nnt", "yield_per_1000", "cases_found"}:
        return f"{value:.4f}"
    return f"{value:.6f}"


def _rows(table: ThresholdTable) -> list[list[str]]:
    return [
        [format_value(name, table.columns[name][i]) for name in COLUMNS] for i in range(len(table))
    ]


def _write_csv(calibration: Calibration, out_dir: Path) -> list[Path]:
    overall = out_dir / "thresholds.csv"
    with overall.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(_rows(calibration.overall))
    strata = out_dir / "thresholds_by_stratum.csv"
    with strata.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("stratum", "group", *COLUMNS))
        for s in calibration.strata:
            writer.writerows([s.stratum, s.group, *row] for row in _rows(s.table))
    return [overall, strata]


def _plots(calibration: Calibration, out_dir: Path, chosen: float | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    cols = calibration.overall.columns
    roc = Figure(figsize=(5, 5), dpi=100)
    ax = roc.subplots()
    for s in [None, *calibration.strata]:
        c = cols if s is None else s.table.columns
        label = "all" if s is None else f"{s.stratum} {s.group}"
        ax.plot(1 - c["specificity"], c["sensitivity"], lw=2 if s is None else 0.8, label=label)
    if chosen is not None:
        i = int(np.flatnonzero(cols["threshold"] == chosen)[0])
        ax.plot(1 - cols["specificity"][i], cols["sensitivity"][i], "ko", label=f"t={chosen:g}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title("ROC by threshold")
    ax.legend(fontsize=6, loc="lower right")
    paths = [out_dir / "roc.png"]
    roc.savefig(paths[0], bbox_inches="tight")

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(cols["threshold"], cols["yield_per_1000"], label="cases found per 1,000 screened")
    ax.plot(cols["threshold"], 1000 * cols["referred_fraction"], label="referred per 1,000")
    ax.set(xlabel="threshold", ylabel="per 1,000 screened")
    if calibration.has_costs:
        cost = ax.twinx()
        cost.plot(cols["threshold"], cols["cost_per_case"], "k--", label="cost per case")
        cost.set_ylabel("cost per case found")
        cost.legend(fontsize=7, loc="upper center")
    if chosen is not None:
        ax.axvline(chosen, color="grey", ls=":")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("Yield, referrals and cost by threshold")
    paths.append(out_dir / "yield_cost.png")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def _table_html(table: ThresholdTable, picks: list[int], columns: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(format_value(c, table.columns[c][i]) or '-')}</td>" for c in columns
        )
        + "</tr>"
        for i in picks
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _picks(table: ThresholdTable, chosen: float | None) -> list[int]:
    t = table.columns["threshold"]
    if len(t) <= 25:
        return list(range(len(t)))
    grid = {int(np.argmin(np.abs(t - x))) for x in np.linspace(t[0], t[-1], 21)}
    if chosen is not None:
        grid.add(int(np.flatnonzero(t == chosen)[0]))
    return sorted(grid)


def _html(calibration: Calibration, record: SiteThresholdRecord | None, plots: list[Path]) -> str:
    study = calibration.study
    chosen = None if record is None else record.threshold
    main = (
        "threshold", "tp", "fp", "tn", "fn", "sensitivity", "sensitivity_ci_low",
        "specificity", "ppv", "npv", "referred_fraction", "nnt", "yield_per_1000",
        "cost_per_case",
    )  # fmt: skip
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Local CAD calibration</title><style>body{font-family:sans-serif;"
        "max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 5px;text-align:right}"
        ".bias{background:#fde2e2;border:2px solid #b00;padding:8px}</style></head><body>",
        "<h1>Local calibration of CAD thresholds</h1>",
        f"<p>Study <code>{html.escape(study.path.name)}</code> (sha256 "
        f"<code>{study.sha256}</code>): {study.screened} people screened, "
        f"{int(study.verified.sum())} with a reference result "
        f"({int(np.nansum(study.reference))} confirmed TB).</p>",
        f"<p><b>Estimates:</b> {html.escape(_ESTIMATORS[calibration.estimator])}</p>",
    ]
    if calibration.bias:
        parts.append(
            f"<p class='bias'><b>Biased estimates.</b> {html.escape(calibration.bias)}</p>"
        )
    if calibration.bands:
        rows = "".join(
            f"<tr><td>{band.low:g}</td><td>{band.fraction:g}</td><td>{people}</td>"
            f"<td>{tested}</td><td>{(tested / people if people else math.nan):.3f}</td></tr>"
            for band, people, tested in calibration.bands
        )
        parts.append(
            "<h2>Sampling for the reference test</h2><table><tr><th>scores from</th>"
            "<th>fraction given</th><th>people</th><th>with reference</th>"
            f"<th>observed fraction</th></tr>{rows}</table>"
        )
    if record is not None:
        parts.append(
            f"<h2>Chosen threshold: {record.threshold:g}</h2><p>Rule: "
            f"{html.escape(record.rule.text)}. Site {html.escape(record.site)}, model "
            f"{html.escape(record.model.name)} {html.escape(record.model.version)} "
            f"(sha256 <code>{record.model.sha256[:16]}</code>), chosen by "
            f"{html.escape(record.chosen_by)} at {record.chosen_at:%Y-%m-%d %H:%M} UTC.</p>"
        )
    parts.append("<h2>By threshold (positive = score &gt;= threshold)</h2>")
    parts.append(_table_html(calibration.overall, _picks(calibration.overall, chosen), main))
    parts.append(
        "<p>nnt: confirmatory tests per case found. Referred fraction and yield are over "
        "everyone screened. 95 % intervals are Wilson intervals; full tables in "
        "thresholds.csv and thresholds_by_stratum.csv.</p>"
    )
    if calibration.strata:
        grid = calibration.overall.columns["threshold"]
        index = int(np.argmin(np.abs(grid - (chosen if chosen is not None else 0.5))))
        parts.append(f"<h2>By subgroup at threshold {grid[index]:g}</h2>")
        head = ("stratum", "group", "with_reference", *main[1:])
        rows_html = []
        for s in calibration.strata:
            cells = [s.stratum, s.group] + [
                format_value(c, s.table.columns[c][index]) or "-" for c in head[2:]
            ]
            rows_html.append("".join(f"<td>{html.escape(c)}</td>" for c in cells))
        parts.append(
            "<table><tr>"
            + "".join(f"<th>{c}</th>" for c in head)
            + "</tr>"
            + "".join(f"<tr>{r}</tr>" for r in rows_html)
            + "</table>"
        )
    for plot in plots:
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        parts.append(f"<p><img alt='{plot.stem}' src='data:image/png;base64,{data}'></p>")
    parts.append(
        "<p><small>Advisory: a threshold chosen for one model version does not carry "
        "over to the next; recalibrate on every version change.</small></p></body></html>"
    )
    return "\n".join(parts)


def write_outputs(
    calibration: Calibration, out_dir: Path, record: SiteThresholdRecord | None = None
) -> list[Path]:
    """Write the tables, plots and HTML report into ``out_dir`` (created if needed).

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = _write_csv(calibration, out_dir)
    plots = _plots(calibration, out_dir, None if record is None else record.threshold)
    report = out_dir / "report.html"
    report.write_text(_html(calibration, record, plots), encoding="utf-8")
    return [*paths, *plots, report]
