"""Local calibration of an NCD risk model: calibration by decile and observed / expected.

The model's 10-year risk is computed for every patient of a local cohort, the patients
are split into ten equal-size groups by predicted risk, and in each group the observed
risk at the horizon is compared with the mean predicted risk. Follow-up is censored,
so the observed risk is the Kaplan-Meier risk by the horizon, and O/E is
:func:`training.ncd_metrics.observed_expected` (the one used by ``tonle recalibrate``),
in each decile and overall; 95 % CIs are percentile bootstrap intervals over patients.
Calibration slope and intercept come from
:func:`training.ncd_metrics.calibration_slope_intercept`. ``tonle calibrate ncd
--save-recalibrated VERSION`` then refits intercept and slope with
:func:`training.ncd_recalibrate.recalibrate` and reports the new version the same way.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training import ncd_metrics as m

__all__ = ["DECILE_COLUMNS", "NcdCalibration", "calibrate_ncd", "write_ncd_outputs"]

F64 = npt.NDArray[np.float64]
DECILE_COLUMNS = (
    "decile", "n", "risk_min", "risk_max", "expected", "observed", "observed_ci_low",
    "observed_ci_high", "o_e", "o_e_ci_low", "o_e_ci_high",
)  # fmt: skip


@dataclass(frozen=True)
class NcdCalibration:
    """Decile table and summary of one model on one cohort.

    Attributes:
        deciles: one row per decile, keys :data:`DECILE_COLUMNS`.
        overall: ``expected``, ``observed``, ``o_e`` with CIs, ``slope``, ``intercept``.
        n: patients.
        horizon: years.
    """

    deciles: list[dict[str, float]]
    overall: dict[str, float]
    n: int
    horizon: float


def _ci(values: F64) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return (float("nan"), float("nan"))
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def calibrate_ncd(
    time: F64,
    event: npt.NDArray[np.bool_],
    risk: F64,
    *,
    horizon: float = 10.0,
    bootstrap_reps: int = 200,
    seed: int = 0,
) -> NcdCalibration:
    """Calibration by decile of predicted risk, and overall O/E.

    Args:
        time: years to event or censoring.
        event: whether ``time`` is an event.
        risk: predicted risk at ``horizon`` per patient.
        horizon: years.
        bootstrap_reps: replicates for the CIs (0: none).
        seed: bootstrap seed.

    Raises:
        ValueError: fewer than 10 patients, or arrays of different lengths.
    """
    n = len(risk)
    if n < 10 or len(time) != n or len(event) != n:
        raise ValueError(f"need >= 10 patients with time, event and risk; got {n}")
    c = m.bootstrap_weights(n, bootstrap_reps, seed)  # column 0: the data as they are
    edges = np.quantile(risk, np.linspace(0, 1, 11)[1:-1])
    decile = np.searchsorted(edges, risk, side="right")
    rows = []
    for d in range(10):
        sel = decile == d
        members = risk[sel]
        if not len(members):
            continue
        ratio = m.observed_expected(time[sel], event[sel], members, horizon, c[sel])
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = (members @ c[sel]) / c[sel].sum(0)
        observed = ratio * expected
        rows.append(
            {
                "decile": float(d + 1),
                "n": float(len(members)),
                "risk_min": float(members.min()),
                "risk_max": float(members.max()),
                "expected": float(expected[0]),
                "observed": float(observed[0]),
                "observed_ci_low": _ci(observed[1:])[0],
                "observed_ci_high": _ci(observed[1:])[1],
                "o_e": float(ratio[0]),
                "o_e_ci_low": _ci(ratio[1:])[0],
                "o_e_ci_high": _ci(ratio[1:])[1],
            }
        )
    total = m.observed_expected(time, event, risk, horizon, c)
    expected_all = (risk @ c) / c.sum(0)
    y, w = m.ipcw_labels(time, event, horizon)
    slope, intercept = m.calibration_slope_intercept(y, risk, w, c)
    overall = {
        "expected": float(expected_all[0]),
        "observed": float(total[0] * expected_all[0]),
        "o_e": float(total[0]),
        "o_e_ci_low": _ci(total[1:])[0],
        "o_e_ci_high": _ci(total[1:])[1],
        "slope": float(slope[0]),
        "slope_ci_low": _ci(slope[1:])[0],
        "slope_ci_high": _ci(slope[1:])[1],
        "intercept": float(intercept[0]),
    }
    return NcdCalibration(deciles=rows, overall=overall, n=n, horizon=horizon)


def write_ncd_outputs(result: NcdCalibration, out_dir: Path, title: str) -> list[Path]:
    """``calibration_deciles.csv``, ``calibration.png`` and ``report.html`` in ``out_dir``."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "calibration_deciles.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(DECILE_COLUMNS)
        for row in result.deciles:
            writer.writerow(
                [
                    str(int(row[k])) if k in {"decile", "n"} else _cell(row[k])
                    for k in DECILE_COLUMNS
                ]
            )
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.subplots()
    exp = [r["expected"] for r in result.deciles]
    obs = [r["observed"] for r in result.deciles]
    err = [
        [max(o - r["observed_ci_low"], 0) for o, r in zip(obs, result.deciles, strict=True)],
        [max(r["observed_ci_high"] - o, 0) for o, r in zip(obs, result.deciles, strict=True)],
    ]
    ax.errorbar(exp, obs, yerr=err, fmt="o", label="deciles (95 % CI)")
    top = max([*exp, *obs, 0.05]) * 1.1
    ax.plot([0, top], [0, top], ":", color="grey", label="perfect calibration")
    ax.set(xlabel="predicted risk", ylabel=f"observed risk at {result.horizon:g} years")
    ax.legend(fontsize=7)
    plot = out_dir / "calibration.png"
    fig.savefig(plot, bbox_inches="tight")
    o = result.overall
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r[k]) or '-')}</td>" for k in DECILE_COLUMNS)
        + "</tr>"
        for r in result.deciles
    )  # fmt: skip
    report = out_dir / "report.html"
    report.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{result.n} patients; horizon {result.horizon:g} years. Observed/expected "
        f"{o['o_e']:.3f} (95 % CI {o['o_e_ci_low']:.3f}-{o['o_e_ci_high']:.3f}); "
        f"observed risk {o['observed']:.4f}, mean predicted {o['expected']:.4f}; "
        f"calibration slope {o['slope']:.3f} (95 % CI {o['slope_ci_low']:.3f}-"
        f"{o['slope_ci_high']:.3f}), intercept {o['intercept']:.3f}.</p>"
        "<p>O/E above 1: the model under-predicts here; below 1: it over-predicts.</p>"
        "<table border='1'><tr>"
        + "".join(f"<th>{k}</th>" for k in DECILE_COLUMNS)
        + f"</tr>{rows}</table><p><img alt='calibration' src='calibration.png'></p>"
        "</body></html>",
        encoding="utf-8",
    )
    return [table, plot, report]


def _cell(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6f}"
