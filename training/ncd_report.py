"""An NCD :class:`~training.ncd_evaluate.EvaluationReport` as Markdown, PNG figures and JSON.

:func:`write_report` writes ``evaluation.json``, ``evaluation.md``, ``calibration.png``
and ``decision_curve.png``; :func:`report_markdown` and :data:`METRIC_ROWS` are shared
with the model card (:mod:`training.ncd_card`).
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


def _fmt(metric: MetricCI, digits: int = 3) -> str:
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
        "| metric | model | " + ("WHO chart |" if who else ""),
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
    lines += ["", f"AUROC: {report.auroc_definition}", "", f"C-index: {report.c_index_definition}"]
    return "\n".join(lines) + "\n"


def write_report(report: EvaluationReport, out_dir: Path, title: str) -> list[Path]:
    """Write ``evaluation.json``, ``evaluation.md``, ``calibration.png``, ``decision_curve.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "evaluation.json", out_dir / "evaluation.md"]
    paths[0].write_text(report.model_dump_json(indent=2), encoding="utf-8")
    paths[1].write_text(report_markdown(report, title), encoding="utf-8")

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    top = 0.0
    for name, curve in report.calibration_curve.items():
        label = "trained model" if name == "model" else "WHO 2019 chart"
        ax.plot(curve["predicted"], curve["observed"], marker="o", label=label)
        top = max(top, *curve["predicted"], *curve["observed"], 0.05)
    ax.plot([0, top], [0, top], color="grey", linestyle="--", label="perfect calibration")
    ax.set_xlabel(f"predicted {report.horizon_years:g}-year risk (decile means)")
    ax.set_ylabel("observed risk (IPCW)")
    paths.append(_save(fig, f"Calibration, {report.outcome}", out_dir / "calibration.png"))

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    overall = report.overall
    curves: list[tuple[dict[str, float], dict[str, Any]]] = [
        (overall.model.net_benefit, {"marker": "o", "label": "trained model"})
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
    return paths


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
