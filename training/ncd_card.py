"""The model card of an NCD risk model: Markdown + PNG plots + the same data as JSON.

Written into the folder that :func:`models.registry.save` copies next to the artifact
(``card_dir``), together with ``evaluation.md/json`` and the plots from
:func:`training.ncd_report.write_report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.details import MetricCI, MissingInput, NcdParityReport, WhoComparison
from models.metadata import FeatureSpec, ModelMetadata
from training.ncd_evaluate import EvaluationReport
from training.ncd_report import METRIC_ROWS, format_ci, report_markdown

__all__ = ["POOR_AUROC", "TRIPOD_AI_ITEMS", "subgroup_warnings", "write_model_card"]


#: TRIPOD+AI (Collins et al., BMJ 2024) items this card and its evaluation report cover,
#: with where. Items about the study's conduct (ethics, funding, registration, patient
#: involvement) belong to the hospital's report and are not claimed here.
TRIPOD_AI_ITEMS: dict[str, str] = {
    "3a/3b Background, objectives": "Intended use",
    "5a Data source": "Population and data (feature table, manifest hash)",
    "6a Participants, eligibility": "Population and data (exclusions in the config)",
    "7 Data preparation": "Input features (units, valid ranges, missing values)",
    "8a Outcome definition": "Outcome and horizon",
    "9a Predictors": "Input features",
    "10 Sample size": "Population and data (patients, events per split)",
    "11 Missing data": "Input features (share missing in training, what a missing value "
    "is scored as; a missing required value is refused)",
    "12a-12f Analytical methods": "Training (model, calibration, IPCW, split, seeds)",
    "12g Performance measures": "Performance (definitions under the tables)",
    "13 Class imbalance": "Training (no resampling; calibrated probabilities)",
    "14 Fairness": "Subgroups (sex, age band, site)",
    "15 Model output": "Outputs and explanations",
    "16 Training vs evaluation": "Training (patient-level split)",
    "20a-20b Participants, characteristics": "Population and data",
    "23a-23b Performance with CIs, subgroups": "Performance, Subgroups",
    "24 Model updating": "Limitations",
    "26 Interpretation, limitations": "Limitations",
    "27a-27c Usability, intended users, missing data in practice": "Intended use",
    "18d Code and model availability": "Provenance (git commit, library versions)",
}


def _fmt(meta: ModelMetadata, key: str) -> str:
    value = meta.metrics.get(key)
    if value is None:
        return "n/a"
    return format_ci(value.value, value.ci_low, value.ci_high)


#: Names in words for the metrics the training stores (``NcdDetails.validation``).
_VALIDATION_NAMES = {"brier": "IPCW Brier score", "auroc": "AUROC"}
_SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def _split_text(split: dict[str, int]) -> str:
    """``{'train': 11148, 'val': 2415, 'test': 2437}`` as a sentence."""
    if not split:
        return "not recorded"
    parts = [f"{n:,} {_SPLIT_NAMES.get(k, k)}" for k, n in split.items()]
    return ", ".join(parts) + " patients"


def _validation_text(validation: dict[str, dict[str, float | None]]) -> str:
    """Each candidate's validation-split scores, named in words."""
    parts = []
    for kind, scores in validation.items():
        named = [
            f"{name} {value:.4f}"
            for key, name in _VALIDATION_NAMES.items()
            if (value := scores.get(key)) is not None
        ]
        seconds = scores.get("fit_seconds")
        if seconds is not None:
            named.append(f"fitted in {seconds:.1f} s")
        parts.append(f"{kind}: " + ", ".join(named))
    return "; ".join(parts) or "not recorded"


def _parity_text(parity: NcdParityReport | None) -> str:
    """The ONNX parity check in words."""
    if parity is None:
        return "not recorded"
    return (
        f"largest absolute difference in probability {parity.max_abs_diff:.1e} "
        f"on {parity.n_rows:,} rows (tolerance {parity.tolerance:.0e}); risk-band "
        f"mismatches: {parity.band_mismatches}"
    )


def _metric_line(name: str, meta: ModelMetadata, key: str, who: bool) -> str:
    line = f"| {name} | {_fmt(meta, f'test_{key}')} |"
    if who:
        line += f" {_fmt(meta, f'compared_test_{key}')} | {_fmt(meta, f'who_test_{key}')} |"
    return line


def _missing_text(spec: FeatureSpec, missing: dict[str, MissingInput]) -> tuple[str, str]:
    """(share missing in training, what a missing value is scored as) for one feature."""
    if spec.required:
        return "", "refused: no advice"
    info = missing.get(spec.name)
    if info is None:
        return "not recorded", "not recorded for this artifact"
    share = f"{100.0 * info.missing_in_training:.1f} %"
    value = info.scored_as
    if value is not None:
        if spec.unit == "1" and spec.minimum == 0.0 and spec.maximum == 1.0:
            return share, f"**{value:g} ({'yes' if value else 'no'})**: unknown is treated as this"
        return share, f"**{value:g} {spec.unit}**: unknown is treated as this"
    if info.missing_in_training:
        return share, "unknown (its own route, learned from the patients it was missing for)"
    return share, (
        "the commonest branch at each split (never missing in training): close to a "
        "typical value, not 'unknown'"
    )


def _lookback_text(days: int | None) -> str:
    if days is None:
        return (
            "look-back not recorded (a ready-made feature table): how old the measurements "
            "training read could be is unknown, so serving cannot check its maximum age"
        )
    return (
        f"the latest on or before the index date and at most {days} days "
        f"({days / 365.25:.1f} years) before it. Serving must not read older ones: its "
        f"`max_data_age_days` may be at most {days} (it refuses to start otherwise)"
    )


def _store_path() -> str:
    from models.registry import store_home

    return str(store_home())


def _ci_text(value: MetricCI) -> str:
    if value.value is None:
        return "n/a"
    if value.ci_low is None or value.ci_high is None:
        return f"{value.value:.3f}"
    return f"{value.value:.3f} ({value.ci_low:.3f} to {value.ci_high:.3f})"


# A subgroup whose discrimination is this poor, or not shown to beat chance, is flagged.
POOR_AUROC = 0.6


def _poor(auroc: MetricCI) -> bool:
    """AUROC below ``POOR_AUROC``, or a 95 % CI that includes 0.5 (no better than chance)."""
    if auroc.value is None:
        return False
    return auroc.value < POOR_AUROC or (auroc.ci_low is not None and auroc.ci_low <= 0.5)


def subgroup_warnings(report: EvaluationReport) -> list[str]:
    """Markdown lines flagging each subgroup where the model or the chart discriminates poorly."""
    flagged = [
        f"- **{g.group}: {g.level}** ({who_name}, n = {metrics.n}): AUROC {_ci_text(metrics.auroc)}"
        for g in report.subgroups
        for who_name, metrics in (("model", g.model), ("WHO chart", g.who))
        if metrics is not None and _poor(metrics.auroc)
    ]
    if not flagged:
        return []
    return [
        f"**Caution: poor discrimination in {len(flagged)} subgroup result(s)** (AUROC below "
        f"{POOR_AUROC:g} or its 95 % CI includes 0.5). Do not rely on the risk ranking "
        "for these patients:",
        "",
        *flagged,
        "",
    ]


def _gate_lines(cfg: dict[str, Any], who: WhoComparison | None) -> list[str]:
    gates = cfg.get("gates") or {}
    lines = [
        "## Gates",
        "",
        f"- Before fitting: at least {gates.get('min_events_per_predictor')} events per input "
        f"(training split); ONNX parity on at least {cfg.get('export', {}).get('parity_min_rows')}"
        " rows.",
        f"- Minimum test AUROC: {gates.get('min_test_auroc')} (passed).",
    ]
    if who is None:
        lines += ["- No WHO chart comparison for this outcome.", ""]
        return lines
    verdict = "**yes**" if who.at_least_as_good else "**NO**"
    lines += [
        f"- Against the {who.chart} on the same {who.n} test patients "
        f"({who.events} events): {who.rule}.",
        "",
        "| (95 % CI) | model | WHO chart |",
        "|---|---|---|",
        f"| AUROC | {_ci_text(who.auroc_model)} | {_ci_text(who.auroc_who)} |",
        f"| calibration slope | {_ci_text(who.calibration_slope_model)} | "
        f"{_ci_text(who.calibration_slope_who)} |",
        f"| observed / expected | {_ci_text(who.observed_expected_model)} | "
        f"{_ci_text(who.observed_expected_who)} |",
        "",
        f"AUROC difference (model - chart): {_ci_text(who.auroc_difference)}. "
        f"At least as good as the chart: {verdict}.",
    ]
    if who.accepted_reason:
        lines.append(
            f"Saved although not at least as good, with the reason: "
            f'"{who.accepted_reason}". Serving shows the chart, not this model\'s number.'
        )
    return [*lines, ""]


def write_model_card(meta: ModelMetadata, report: EvaluationReport, card_dir: Path) -> list[Path]:
    """Write ``model-card.md`` and ``model-card.json`` into ``card_dir``."""
    card_dir.mkdir(parents=True, exist_ok=True)
    details = meta.ncd
    horizon = details.horizon_years
    cfg = meta.config
    split = details.split_counts
    has_who = report.overall.who is not None
    lines = [
        f"# Model card: {meta.name} {meta.version}",
        "",
        f"{meta.description}",
        "",
        "**Advisory only.** The output supports, never replaces, a clinician's judgement.",
        "",
        "## Intended use",
        "",
        meta.intended_use,
        "",
        "## Outcome and horizon",
        "",
        f"Outcome: `{details.outcome}` within {horizon} years of the index date "
        "(from the feature table's `<outcome>_event` / `<outcome>_time` columns).",
        "",
        "## Population and data",
        "",
        f"- Training data manifest (sha256 of the feature table content): "
        f"`{meta.training_manifest_sha256}`",
        f"- Patient-level split (seed {cfg.get('seed')}): {_split_text(split)}",
        f"- Measurements: {_lookback_text(meta.lookback_days)}",
        f"- Ages {cfg.get('min_age')}-{cfg.get('max_age')}; prevalent diabetes excluded: "
        f"{cfg.get('exclude_prevalent_diabetes')}; rows missing a required feature left out: "
        f"{cfg.get('drop_incomplete')}",
        f"- Test split: {report.n_rows} patients, {report.overall.model.events} events within "
        f"{horizon} years among {report.overall.model.n_known} with known status",
        "",
        "## Input features",
        "",
        "| feature | meaning | unit | valid range | LOINC | required | missing in training "
        "| a missing value is scored as | explanation reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    reference = details.reference
    missing = details.missing_inputs
    for f in meta.features:
        valid = (
            f"{f.minimum:g}-{f.maximum:g}"
            if f.minimum is not None and f.maximum is not None
            else ""
        )
        share, scored_as = _missing_text(f, missing)
        lines.append(
            f"| `{f.name}` | {f.description} | {f.unit} | {valid} | {f.loinc or ''} | "
            f"{'yes' if f.required else 'no (missing allowed)'} | {share} | {scored_as} | "
            f"{reference.get(f.name, '')} |"
        )
    lines += [
        "",
        "A missing optional value is passed to the model as NaN. What the model then makes "
        "of it was measured on the training rows (`training/ncd_missing.py`) and is in the "
        "table: where it names a value, **a missing input is scored exactly as that value** "
        "(an unknown 0/1 input scored as 0 means unknown is treated as 'no', e.g. "
        "untreated). The gradient-boosting model has a route of its own for unknown only "
        "for inputs that were missing in training; the logistic baseline imputes the "
        "training median. Every card and explanation page lists the inputs that were not "
        "recorded and what they were scored as. The explanation reference is only the "
        "baseline explanations compare against; it is never used for a missing value. A "
        "missing required value or a value outside the valid range gives no advice.",
        "",
        "## Training",
        "",
        f"- Candidates: {', '.join(str(c) for c in cfg.get('candidates') or [])}; "
        f"chosen: **{details.estimator}** "
        "(lowest IPCW Brier score on the validation split).",
        f"- Validation split: {_validation_text(details.validation)}",
        "- Calibration: sigmoid (Platt), cross-fitted (CalibratedClassifierCV, "
        f"{cfg.get('calibration', {}).get('folds')} folds, one refitted model).",
        "- Censoring: the outcome at the horizon is unknown for patients censored earlier "
        "without an event. They get weight 0 and everyone else an inverse-probability-of-"
        "censoring weight from a Kaplan-Meier estimate of the censoring distribution, so "
        "the weighted known-status patients stand for the whole cohort. Dropping censored "
        "patients without weights would inflate the risk; counting them as non-events "
        "would deflate it.",
        "",
        "## Performance (test split)",
        "",
        f"Model on all {report.n_rows} test patients"
        + (
            f"; model and WHO 2019 chart side by side on the {report.n_compared} of them "
            "for whom the chart gives a risk."
            if has_who
            else "."
        ),
        "",
        "| metric (95 % CI) | model, all test rows |"
        + (" model, compared rows | WHO 2019 chart, compared rows |" if has_who else ""),
        "|---|---|" + ("---|---|" if has_who else ""),
        *[_metric_line(label, meta, key, has_who) for label, key in METRIC_ROWS],
        "",
        *subgroup_warnings(report),
        "![calibration](calibration.png)",
        "",
        "![decision curve](decision_curve.png)",
        "",
        "Full tables (decision curve, subgroups by sex, age band and site): "
        "[evaluation.md](evaluation.md).",
        "",
        report_markdown(report, "Evaluation details"),
        *_gate_lines(cfg, details.who_comparison),
        "## Outputs and explanations",
        "",
        "ONNX input `features` float32 [N, F] in the order above; output `probabilities` "
        f"float32 [N, 2], column 1 = probability of the event within {horizon} years. Each "
        "explanation is the risk change when one feature is set to its reference value, "
        "computed with this ONNX model.",
        "",
        "## Export",
        "",
        f"ONNX parity vs scikit-learn: {_parity_text(details.parity)}.",
        "",
        "## Limitations",
        "",
        *[f"- {item}" for item in meta.limitations],
        "",
        "## Provenance",
        "",
        f"- Code revision: `{meta.code_version or 'unknown'}`",
        f"- Model store: `{_store_path()}`; this card: `{details.card_dir or card_dir}`",
        "- Libraries: "
        + (", ".join(f"{k} {v}" for k, v in meta.library_versions.items()) or "not recorded"),
        "",
        "## TRIPOD+AI items covered",
        "",
        "| item | where |",
        "|---|---|",
        *[f"| {item} | {where} |" for item, where in TRIPOD_AI_ITEMS.items()],
        "",
    ]
    md = card_dir / "model-card.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    data = {
        "metadata": json.loads(meta.model_dump_json()),
        "evaluation": json.loads(report.model_dump_json()),
        "tripod_ai": TRIPOD_AI_ITEMS,
    }
    js = card_dir / "model-card.json"
    js.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return [md, js]
