"""An NCD :class:`~training.ncd_evaluate.EvaluationReport` as Markdown, PNG figures and JSON.

:func:`write_report` writes ``evaluation.json``, ``evaluation.md``, ``evaluation.html``
(self-contained, plots embedded, for a clinical committee), ``calibration.png`` and
``decision_curve.png``; :func:`report_markdown` and :data:`METRIC_ROWS` are shared with
the model card (:mod:`training.ncd_card`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.ncd_evaluate import EvaluationReport, MetricCI

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["METRIC_ROWS", "format_ci", "report_markdown", "report_summary", "write_report"]


def format_ci(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """A value with its confidence interval, as every report and model card writes it.

    ``0.021 (-0.380 to 0.255)``: "to", never a hyphen, since a bound can be negative
    ("-0.380-0.255" reads as a subtraction or a range from 0.380).

    Args:
        value: The point estimate (None: ``n/a``).
        low: Lower bound (None: no interval shown).
        high: Upper bound (None: no interval shown).
        digits: Decimals.
    """
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    if low is not None and high is not None:
        text += f" ({low:.{digits}f} to {high:.{digits}f})"
    return text


def _fmt(metric: MetricCI | None, digits: int = 3) -> str:
    if metric is None:
        return "n/a"
    return format_ci(metric.value, metric.ci_low, metric.ci_high, digits)


# Headline metrics, label and EvaluationReport key, shown in reports and model cards.
METRIC_ROWS = (
    ("AUROC at horizon (IPCW)", "auroc"),
    ("Harrell's C", "harrell_c"),
    ("Uno's C", "uno_c"),
    ("Calibration slope", "calibration_slope"),
    ("Calibration intercept", "calibration_intercept"),
    ("Brier (IPCW)", "brier"),
    ("ECE", "ece"),
    ("Observed / expected", "observed_expected"),
)


def report_markdown(report: EvaluationReport, title: str) -> str:
    """The report as Markdown tables (model next to the WHO chart)."""
    who = report.overall.who is not None
    lines = [f"## {title}", ""]
    lines.append(
        f"{report.n_rows} patients; {report.n_compared} in the comparison set"
        + (f" (WHO chart: {report.who_reference})" if who else "")
        + f". 95 % CIs: percentile bootstrap, {report.bootstrap_reps} replicates."
    )
    if report.not_compared:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report.not_compared.items()))
        lines.append(f"Not in the comparison set (the WHO chart gives no risk): {reasons}.")
    lines += [
        "",
        f"| metric | {report.model_label} | " + ("WHO chart |" if who else ""),
        "|---|---|" + ("---|" if who else ""),
    ]
    for label, key in METRIC_ROWS:
        row = f"| {label} | {_fmt(getattr(report.overall.model, key))} |"
        if report.overall.who is not None:
            row += f" {_fmt(getattr(report.overall.who, key))} |"
        lines.append(row)
    lines += [
        "",
        f"Model on all {report.n_rows} rows: AUROC "
        f"{_fmt(report.model_all_rows.auroc)}, calibration slope "
        f"{_fmt(report.model_all_rows.calibration_slope)}.",
        "",
    ]
    lines += [
        "### Decision curve (net benefit)",
        "",
        "| threshold | model | " + ("WHO chart | " if who else "") + "treat all |",
        "|---|---|" + ("---|" if who else "") + "---|",
    ]
    for t, v in report.overall.model.net_benefit.items():
        row = f"| {float(t):.1%} | {v:.4f} |"
        if report.overall.who is not None:
            row += f" {report.overall.who.net_benefit[t]:.4f} |"
        row += f" {report.overall.model.treat_all_net_benefit[t]:.4f} |"
        lines.append(row)
    lines += [
        "",
        "### Subgroups",
        "",
        "| group | n | events | AUROC model | "
        + ("AUROC WHO | " if who else "")
        + "slope model | Brier model | ECE model |",
        "|---|---|---|---|" + ("---|" if who else "") + "---|---|---|",
    ]
    for g in report.subgroups:
        row = f"| {g.group}: {g.level} | {g.model.n} | {g.model.events} | {_fmt(g.model.auroc)} |"
        if g.who is not None:
            row += f" {_fmt(g.who.auroc)} |"
        row += (
            f" {_fmt(g.model.calibration_slope, 2)} | {_fmt(g.model.brier, 4)} |"
            f" {_fmt(g.model.ece, 4)} |"
        )
        lines.append(row)
    for name, rows in report.calibration_deciles.items():
        label = report.model_label if name == "model" else "WHO 2019 chart"
        lines += [
            "",
            f"### Calibration by decile: {label}",
            "",
            "| decile | n | events | mean predicted | observed (Kaplan-Meier, 95 % CI) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['decile']:.0f} | {r['n']:.0f} | {r['events']:.0f} | {r['predicted']:.3f} | "
            f"{format_ci(r['observed'], _finite(r['ci_low']), _finite(r['ci_high']))} |"
            for r in rows
        ]
    lines += ["", f"AUROC: {report.auroc_definition}", "", f"C-index: {report.c_index_definition}"]
    return "\n".join(lines) + "\n"


def _finite(value: float) -> float | None:
    return value if value == value else None  # NaN -> None


def write_report(report: EvaluationReport, out_dir: Path, title: str) -> list[Path]:
    """Write ``evaluation.json``, ``evaluation.md``, ``calibration.png``, ``decision_curve.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "evaluation.json", out_dir / "evaluation.md"]
    paths[0].write_text(report.model_dump_json(indent=2), encoding="utf-8")
    markdown = report_markdown(report, title)
    paths[1].write_text(markdown, encoding="utf-8")

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    top = 0.05
    for name, rows in report.calibration_deciles.items():
        label = report.model_label if name == "model" else "WHO 2019 chart"
        pred = [r["predicted"] for r in rows]
        obs = [r["observed"] for r in rows]
        err = [
            [max(o - r["ci_low"], 0.0) if r["ci_low"] == r["ci_low"] else 0.0 for o, r in
             zip(obs, rows, strict=True)],
            [max(r["ci_high"] - o, 0.0) if r["ci_high"] == r["ci_high"] else 0.0 for o, r in
             zip(obs, rows, strict=True)],
        ]  # fmt: skip
        ax.errorbar(pred, obs, yerr=err, marker="o", capsize=3, label=label)
        top = max(top, *pred, *obs)
    ax.plot([0, top], [0, top], color="grey", linestyle="--", label="perfect calibration")
    ax.set_xlabel(f"predicted {report.horizon_years:g}-year risk (decile means)")
    ax.set_ylabel("observed risk (Kaplan-Meier, 95 % CI)")
    paths.append(_save(fig, f"Calibration, {report.outcome}", out_dir / "calibration.png"))

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    overall = report.overall
    curves: list[tuple[dict[str, float], dict[str, Any]]] = [
        (overall.model.net_benefit, {"marker": "o", "label": report.model_label})
    ]
    if overall.who is not None:
        curves.append((overall.who.net_benefit, {"marker": "s", "label": "WHO 2019 chart"}))
    curves.append((overall.model.treat_all_net_benefit, {"linestyle": "--", "label": "treat all"}))
    thresholds = [float(t) for t in overall.model.net_benefit]
    for net_benefit, style in curves:
        ax.plot(thresholds, list(net_benefit.values()), **style)
    ax.axhline(0.0, color="grey", linewidth=0.8, label="treat none")
    best = max([max(c.values()) for c, _ in curves] + [0.001])
    ax.set_ylim(-0.5 * best, 1.15 * best)  # treat-all falls far below zero; keep the detail
    ax.set_xlabel("threshold risk")
    ax.set_ylabel("net benefit")
    paths.append(_save(fig, f"Decision curve, {report.outcome}", out_dir / "decision_curve.png"))
    paths.append(_write_html(markdown, title, out_dir))
    return paths


def _write_html(markdown: str, title: str, out_dir: Path) -> Path:
    """``evaluation.html``: the Markdown tables as HTML, with both plots embedded."""
    import base64
    import html

    body: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *rows = [r for r in table if not set("".join(r)) <= set("-")]
            body.append(
                "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in rows
                )
                + "</table>"
            )  # fmt: skip
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
            continue
        flush()
        if line.startswith("### "):
            body.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    for name, alt in (("calibration.png", "Calibration by decile"),
                      ("decision_curve.png", "Decision curve")):  # fmt: skip
        data = base64.b64encode((out_dir / name).read_bytes()).decode("ascii")
        body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                    f"<figcaption>{alt}</figcaption></figure>")  # fmt: skip
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
        "line-height:1.4}table{border-collapse:collapse;margin:1rem 0;display:block;"
        "overflow-x:auto}td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left}"
        "img{max-width:100%}"
    )
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        "<p>Advisory evaluation for a clinical committee; 95 % confidence intervals in "
        "brackets.</p>" + "".join(body) + "</body></html>"
    )
    path = out_dir / "evaluation.html"
    path.write_text(page, encoding="utf-8")
    return path


def _save(fig: Figure, title: str, path: Path) -> Path:
    """Title the figure's plot, add its legend, write it as PNG and close it."""
    import matplotlib.pyplot as plt

    ax = fig.axes[0]
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def report_summary(report: EvaluationReport) -> dict[str, Any]:
    """A small JSON-ready summary for progress output."""
    out: dict[str, Any] = {
        "auroc": report.overall.model.auroc.value,
        "calibration_slope": report.overall.model.calibration_slope.value,
    }
    if report.overall.who is not None:
        out["who_auroc"] = report.overall.who.auroc.value
    return json.loads(json.dumps(out))  # type: ignore[no-any-return]
