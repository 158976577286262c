"""Evaluate a chest X-ray artifact and write its model card.

``tonle evaluate cxr-triage:0.1.0 --data labels.csv`` scores the EXPORTED model
(ONNX Runtime, through :class:`~models.cxr_predictor.CxrPredictor`, the code serving
uses) on a labelled set and reports, per label, AUROC with a bootstrap 95 % CI,
sensitivity / specificity at the operating point, calibration (ECE and reliability
bins) before and after the artifact's calibration; localisation (peak of the upsampled
map inside the finding mask, mean IoU of the thresholded map) of the ``abnormal`` map
over all positive cases (union mask), of each finding's own map over the cases with
that finding (its own mask, see :func:`localisation_rows`), and pooled over every
positive (image, finding) pair, next to two trivial baselines (the image centre, and
one fixed map of where these cases' masks are most often); subgroups (sex, age band,
site); and the previous version side by side on the same data. The card is Markdown +
PNG + JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel
from scipy.special import expit

from models.cxr_predictor import CxrPredictor
from models.details import CxrParityReport, CxrSplit, FeatureBins, MaskLoss, OodSummary
from models.metadata import MetricValue, ModelMetadata
from models.registry import StoredModel
from training.cxr_data import CxrData
from training.cxr_metrics import (
    AurocCI,
    Localisation,
    auroc_ci,
    calibration_bins,
    centre_map,
    expected_calibration_error,
    localisation,
    prior_map,
    proportion_ci,
    sens_spec,
)

__all__ = [
    "PEAK_IN_MASK_DEFINITION",
    "POOLED_FINDINGS",
    "CxrReport",
    "LabelReport",
    "LocalisationRow",
    "SubgroupReport",
    "drift_text",
    "evaluate_predictions",
    "evaluate_stored",
    "localisation_rows",
    "report_metrics",
    "write_card",
]

# The localisation row pooling every positive (image, finding) pair.
POOLED_FINDINGS = "findings"
# How the peak-in-mask rates are defined (model card and benchmark text).
PEAK_IN_MASK_DEFINITION = (
    "Peak in mask: the label's map is upsampled (bilinear, as served) to the mask's "
    "resolution and its highest point must lie inside the mask. `abnormal`: one case per "
    "positive image, against the union of its findings' masks. A finding (tb, nodule, "
    "...): one case per image positive for that finding, that finding's own map against "
    "that finding's OWN mask; where a data set has no own mask for it (only a union, e.g. "
    "boxes without a finding name), the union mask is used only when it is the image's "
    "only finding, and other cases are left out (the `cases` column counts each kind). "
    "`findings`: the same test pooled over every positive (image, finding) pair, i.e. "
    "hits / pairs, so an image with two findings counts twice, once per finding."
)

AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("15-39", 15, 40),
    ("40-59", 40, 60),
    ("60+", 60, 200),
)


class LabelReport(BaseModel):
    """One label's discrimination, operating point and calibration, over the cases whose
    truth is known (``n_known``; an unknown label is never counted as absent)."""

    label: str
    n_known: int
    auroc: AurocCI
    threshold: float | None  # None: the model has no operating point for this label
    no_operating_point: str | None = None  # why, when it has none
    sensitivity: float | None
    sensitivity_ci: tuple[float, float] | None  # exact 95 % CI over this set's positives
    specificity: float | None
    ece: float  # of the calibrated probabilities
    ece_uncalibrated: float  # of sigmoid(logit), before the artifact's calibration
    calibration: list[tuple[float, float, int]]


class LocalisationRow(BaseModel):
    """One map scored on one group of positive cases, next to trivial baselines."""

    finding: str  # the label whose map is scored
    cases: str  # which positive cases
    model: Localisation
    centre: Localisation  # baseline: the map peaks at the image centre
    prior: Localisation  # baseline: one fixed map, how often each point is in these masks


class SubgroupReport(BaseModel):
    """``abnormal`` performance in one subgroup (cases with a known ``abnormal``)."""

    group: str
    n: int
    n_positive: int
    auroc: float | None
    sensitivity: float | None  # None: no operating point
    specificity: float | None


class CxrReport(BaseModel):
    """Everything ``tonle evaluate`` measured for one model on one data set."""

    model: str
    sha256: str
    data_manifest_sha256: str
    n: int
    labels: list[LabelReport]
    # First the ``abnormal`` map on all positives, then each finding's map, then
    # ``POOLED_FINDINGS``: every positive (image, finding) pair.
    localisation: list[LocalisationRow]
    subgroups: list[SubgroupReport]

    def label(self, name: str) -> LabelReport:
        """The report of label ``name``."""
        return next(r for r in self.labels if r.label == name)

    def headline_localisation(self) -> Localisation:
        """The ``abnormal`` map on every positive case with a mask (the issue's target)."""
        return self.localisation[0].model

    def finding_localisation(self) -> Localisation | None:
        """Each finding's map on its own mask, pooled over positive (image, finding) pairs."""
        row = next((r for r in self.localisation if r.finding == POOLED_FINDINGS), None)
        return row.model if row is not None else None


def evaluate_predictions(
    data: CxrData,
    logits: npt.NDArray[np.float64],
    probs: npt.NDArray[np.float64],
    cams: npt.NDArray[np.float32],
    thresholds: dict[str, float],
    labels: list[str],
    *,
    model: str,
    sha256: str,
    reps: int = 500,
    seed: int = 0,
    no_operating_point: dict[str, str] | None = None,
) -> CxrReport:
    """Build a :class:`CxrReport` from raw logits, calibrated probabilities and maps.

    Args:
        thresholds: label -> operating threshold; a label left out has none (AUROC and
            calibration are still reported, sensitivity and specificity are not).
        no_operating_point: label -> why it has no operating point (for the card).
    """
    why = no_operating_point or {}
    per_label: list[LabelReport] = []
    for j, label in enumerate(labels):
        y = data.labels[:, j]
        threshold = thresholds.get(label)
        sens = spec = None
        sens_ci = None
        if threshold is not None:
            sens, spec = sens_spec(y, probs[:, j], threshold)
            flagged = int(((probs[:, j] >= threshold) & (y > 0)).sum())
            sens_ci = proportion_ci(flagged, int((y > 0).sum()))
        per_label.append(
            LabelReport(
                label=label,
                n_known=int((~np.isnan(y)).sum()),
                auroc=auroc_ci(y, probs[:, j], reps=reps, seed=seed),
                threshold=threshold,
                no_operating_point=None
                if threshold is not None
                else why.get(label, "none in the model's metadata"),
                sensitivity=sens,
                sensitivity_ci=sens_ci,
                specificity=spec,
                ece=expected_calibration_error(y, probs[:, j]),
                ece_uncalibrated=expected_calibration_error(y, expit(logits[:, j])),
                calibration=calibration_bins(y, probs[:, j]),
            )
        )
    j_abn = labels.index("abnormal")
    return CxrReport(
        model=model,
        sha256=sha256,
        data_manifest_sha256=data.manifest_sha256,
        n=len(data.table),
        labels=per_label,
        localisation=localisation_rows(data, cams, labels),
        subgroups=_subgroups(data, probs[:, j_abn], thresholds.get("abnormal"), j_abn),
    )


def _row(
    finding: str,
    cases: str,
    maps: list[npt.NDArray[np.float32]],
    masks: list[npt.NDArray[np.bool_]],
) -> LocalisationRow:
    n = len(masks)
    stacked = np.stack(maps) if maps else np.zeros((0, 1, 1), np.float32)
    return LocalisationRow(
        finding=finding,
        cases=cases,
        model=localisation(stacked, masks),
        centre=localisation(np.repeat(centre_map()[None], n, axis=0), masks),
        prior=localisation(np.repeat(prior_map(masks)[None], n, axis=0), masks),
    )


def localisation_rows(
    data: CxrData, cams: npt.NDArray[np.float32], labels: list[str]
) -> list[LocalisationRow]:
    """The ``abnormal`` map on all positives, each finding's map on its cases, pooled.

    Each label's map is scored against :meth:`~training.cxr_data.CxrData.label_mask`:
    ``abnormal`` against the union mask; a finding against its own mask where the data
    set has one (the synthetic set always does), else against the union mask only when
    it is the image's sole finding. The last row (:data:`POOLED_FINDINGS`) pools every
    positive (image, finding) pair (:data:`PEAK_IN_MASK_DEFINITION`).
    """
    rows: list[LocalisationRow] = []
    pooled_maps: list[npt.NDArray[np.float32]] = []
    pooled_masks: list[npt.NDArray[np.bool_]] = []
    pooled_kinds: dict[str, int] = {}
    for j, label in enumerate(labels):
        maps: list[npt.NDArray[np.float32]] = []
        masks: list[npt.NDArray[np.bool_]] = []
        kinds: dict[str, int] = {}
        for i in np.flatnonzero(data.labels[:, j] > 0):
            found = data.label_mask(int(i), label)
            if found is None:
                kinds["no mask"] = kinds.get("no mask", 0) + 1
                continue
            maps.append(cams[i, j])
            masks.append(found[0])
            kinds[found[1]] = kinds.get(found[1], 0) + 1
        if label == "abnormal":
            cases = "all positives (mask: union of findings)"
        else:
            cases = "with it (mask: " + _kinds_text(kinds) + ")"
            pooled_maps += maps
            pooled_masks += masks
            for kind, count in kinds.items():
                pooled_kinds[kind] = pooled_kinds.get(kind, 0) + count
        rows.append(_row(label, cases, maps, masks))
    rows.sort(key=lambda r: r.finding != "abnormal")  # stable: abnormal first
    pooled_cases = "every positive (image, finding) pair (" + _kinds_text(pooled_kinds) + ")"
    rows.append(_row(POOLED_FINDINGS, pooled_cases, pooled_maps, pooled_masks))
    return rows


def _kinds_text(kinds: dict[str, int]) -> str:
    order = ("own", "sole finding", "no mask")
    return ", ".join(f"{kinds[k]} {k}" for k in order if kinds.get(k)) or "none"


# Categorical columns of labels.csv reported as subgroups, when present.
SUBGROUP_COLUMNS: tuple[str, ...] = ("sex", "site", "view")


def _subgroups(
    data: CxrData, p: npt.NDArray[np.float64], threshold: float | None, j: int
) -> list[SubgroupReport]:
    table = data.table
    groups: list[tuple[str, npt.NDArray[np.bool_]]] = []
    for column in SUBGROUP_COLUMNS:
        if column not in table.columns:
            continue
        values = table[column].fillna("").astype(str)
        for value in sorted(set(values) - {""}):
            groups.append((f"{column}={value}", (values == value).to_numpy()))
    age = table["age"].astype(float).to_numpy()
    for name, low, high in AGE_BANDS:
        groups.append((f"age={name}", (age >= low) & (age < high)))
    out: list[SubgroupReport] = []
    for name, sel in groups:
        sel = sel & ~np.isnan(data.labels[:, j])
        if not sel.any():
            continue
        y = data.labels[sel, j]
        sens = spec = None
        if threshold is not None:
            sens, spec = sens_spec(y, p[sel], threshold)
        out.append(
            SubgroupReport(
                group=name,
                n=int(sel.sum()),
                n_positive=int((y > 0).sum()),
                auroc=auroc_ci(y, p[sel], reps=0).value,
                sensitivity=sens,
                specificity=spec,
            )
        )
    return out


def evaluate_stored(
    stored: StoredModel,
    data: CxrData,
    *,
    overrides: dict[str, float] | None = None,
    reps: int = 500,
    batch: int = 32,
) -> CxrReport:
    """Score ``data`` with the ONNX artifact and evaluate it at its thresholds."""
    predictor = CxrPredictor(stored, threads=2)
    meta = stored.metadata
    logits, cams = [], []
    for start in range(0, len(data.images), batch):
        raw, cam = predictor.raw(np.ascontiguousarray(data.images[start : start + batch]))
        logits.append(raw)
        cams.append(cam)
    applied = predictor.thresholds(overrides, missing_ok=True)
    thresholds = {t.label: t.threshold for t in applied}
    all_logits = np.concatenate(logits).astype(np.float64)
    return evaluate_predictions(
        data,
        all_logits,
        predictor.calibrate(all_logits),
        np.concatenate(cams),
        thresholds,
        predictor.labels,
        model=meta.tag,
        sha256=meta.sha256,
        reps=reps,
        no_operating_point=dict(meta.cxr.no_operating_point),
    )


def report_metrics(report: CxrReport) -> dict[str, MetricValue]:
    """The report's headline numbers as metadata metrics (undefined ones left out)."""
    metrics: dict[str, MetricValue] = {}

    def put(key: str, value: float | None, **more: float | int | None) -> None:
        if value is not None and np.isfinite(value):
            metrics[key] = MetricValue(value=value, **more)  # type: ignore[arg-type]

    for r in report.labels:
        a = r.auroc
        put(f"auroc_{r.label}", a.value, ci_low=a.ci_low, ci_high=a.ci_high, n=a.n)
        if r.threshold is not None:
            put(f"sensitivity_{r.label}", r.sensitivity, n=a.n_positive)
            put(f"specificity_{r.label}", r.specificity, n=a.n - a.n_positive)
        put(f"ece_{r.label}", r.ece, n=a.n)
    for row in report.localisation:
        loc = row.model
        suffix = "" if row.finding == "abnormal" else f"_{row.finding}"
        put(f"cam_peak_in_mask{suffix}", loc.peak_in_mask, n=loc.n)
        put(f"cam_mean_iou{suffix}", loc.mean_iou, n=loc.n)
    return metrics


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _auroc_text(a: AurocCI | None) -> str:
    if a is None or a.value is None:
        return "-"
    return f"{a.value:.3f} ({_fmt(a.ci_low)}-{_fmt(a.ci_high)})"


def _split_text(split: CxrSplit | None) -> str:
    if split is None:
        return "- Patient-level split: not recorded"
    return (
        f"- Patient-level split: train {split.train}, validation {split.validation}, test "
        f"{split.test} images; assigned by {split.source or '?'}"
    )


def _parity_text(parity: CxrParityReport | None) -> str:
    if parity is None:
        return "- Parity vs PyTorch: not recorded"
    return (
        f"- Parity vs PyTorch on {parity.n_images} real validation images: "
        f"max |diff| logits {parity.max_abs_diff_logits:.1e}, "
        f"heatmap {parity.max_scaled_diff_cam:.1e} of its range "
        f"({parity.max_abs_diff_cam:.1e} absolute); allowed 1e-4"
    )


def _mask_loss_text(mask_loss: MaskLoss | None) -> str:
    if mask_loss is None or mask_loss.weight <= 0:
        return "- Localisation supervision: none (maps learnt from image labels only)"
    weight = mask_loss.weight
    if "pairs" in mask_loss.model_fields_set:  # per-label masks (0.3.0-demo on)
        whose = (
            "for each positive label with a mask of its own (`abnormal`: the union of "
            "findings; a finding: its own mask, else the union when it is the image's only "
            "finding; positive (image, label) pairs by mask: "
            + ", ".join(f"{k} {v}" for k, v in mask_loss.pairs.items())
            + ")"
        )
    else:  # models trained before per-finding masks
        whose = (
            "for each positive label whose mask it is (`abnormal`: the union of findings; "
            "a finding: when it is the only one)"
        )
    return (
        f"- Localisation supervision: mask loss (weight {weight:g}) on "
        f"{mask_loss.images} training images with a finding mask: {whose}, "
        "-log of the map's softmax mass inside the mask "
        "(`training.cxr_train.mask_loss`). The maps are still those of the same forward "
        "pass (logits = mean(cam) + bias)"
    )


def _share(value: float | None) -> str:
    return "?" if value is None else f"{value:.1%}"


def _ood_text(ood: OodSummary | None) -> str:
    if ood is None:
        return "None: every image gets scores, however unlike the training images it is."
    return (
        f"Before any score is shown, an image whose {ood.method} ({ood.dims} "
        f"dimensions, fitted on {ood.fitted_on}, Ledoit-Wolf shrinkage "
        f"{ood.shrinkage:.3f}) to the training images exceeds the threshold (squared "
        f"distance {ood.threshold:.1f}: the {ood.threshold_on}) is refused: "
        '"cannot assess: unlike the images this model was trained on". The mean, '
        "precision matrix and threshold are part of the ONNX graph (output `ood_score`, "
        "above 1 = refuse), covered by its sha256. Held-out test images refused: "
        f"{_share(ood.refused_test)} of {ood.n_test or '?'} (not used to set the threshold)."
    )


def drift_text(recorded: Mapping[str, FeatureBins]) -> str:
    """The card's account of the drift reference (``CxrDetails.training_distribution``)."""
    if not recorded:
        return "None recorded: serving shows no drift for this version."
    images = sorted(name for name in recorded if not name.startswith("score:"))
    scores = sorted(name for name in recorded if name.startswith("score:"))
    parts = ["Recorded for monitoring after go-live (metadata `extra.training_distribution`)."]
    if images:
        n = max(recorded[name].n for name in images)
        parts.append(
            f"Decile bins of {len(images)} image statistics over {n} training images: "
            + ", ".join(f"`{name}`" for name in images)
            + "."
        )
    if scores:
        n = max(recorded[name].n for name in scores)
        parts.append(
            f"Decile bins of the calibrated scores of {len(scores)} labels over {n} "
            "validation images (the network is more confident on its training images)."
        )
    parts.append(
        "Serving counts the bin of each read's values and reports the population "
        "stability index against these (`tonle_cxr_feature_psi`, `/ui/monitor`); above "
        "0.25 is a major shift."
    )
    return " ".join(parts)


def _init_text(init: dict[str, Any] | None) -> str:
    if not init:
        return "- Initial weights: none (trained from scratch)"
    adapted = "; ".join(f"{k}: {v}" for k, v in init.get("adapted", {}).items()) or "none"
    return (
        f"- Initial weights: `{init['file']}` (sha256 `{init['sha256']}`, origin: "
        f"{init.get('origin') or 'not stated'}), {init['layout']} layout: {init['loaded']} "
        f"of {init['total']} tensors loaded, {len(init.get('not_loaded', []))} left at "
        f"their initial values, {len(init.get('unused', {}))} in the file not used; "
        f"adapted: {adapted}. Fine-tuning: backbone frozen for "
        f"{init.get('freeze_epochs', 0)} epoch(s), backbone learning rate x "
        f"{init.get('backbone_lr_scale', 1.0):g}"
    )


def _plots(report: CxrReport, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    for r in report.labels:
        if r.calibration:
            pred, obs, _ = zip(*r.calibration, strict=True)
            ax.plot(pred, obs, marker="o", label=r.label)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_title(f"Calibration, {report.model}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "calibration.png", dpi=100)
    plt.close(fig)
    return ["calibration.png"]


def write_card(
    meta: ModelMetadata,
    report: CxrReport,
    folder: Path,
    previous: CxrReport | None = None,
) -> Path:
    """Write ``README.md``, ``metrics.json`` and ``calibration.png`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    images = _plots(report, folder)
    payload = {"report": report.model_dump(mode="json")}
    if previous is not None:
        payload["previous"] = previous.model_dump(mode="json")
    (folder / "metrics.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    cxr = meta.cxr
    split, parity = cxr.split, cxr.parity
    spec = meta.image
    lines = [
        f"# Model card: {meta.tag}",
        "",
        "**Advisory only.** Triage aid for chest radiographs; every positive or "
        "negative read needs a clinician. Not a diagnosis.",
        "",
        "## Intended use",
        "",
        meta.intended_use,
        "",
        "## Input and outputs",
        "",
        f"- Input `image` float32 [N, 1, {spec.size if spec else '?'}, "
        f"{spec.size if spec else '?'}]: {spec.normalisation if spec else '?'}",
        f"- Outputs: `logits` [N, 5] for {', '.join(cxr.labels)}; `cam` "
        f"[N, 5, {'x'.join(str(v) for v in cxr.cam_shape or ())}] class "
        "activation maps from the same forward pass (logits = mean(cam) + bias)",
        "- Probabilities: Platt scaling per label, `sigmoid(logit / T + b)`, fitted on the "
        "validation split with Platt's smoothed targets (metadata `extra.calibration`: "
        "`scale` = 1/T, `offset` = b); thresholds below apply to them",
        "",
        "## Training",
        "",
        f"- Network: MONAI `{cxr.arch or '?'}`, 1 channel, multi-label BCE, "
        "MONAI augmentation (affine, contrast, noise; finding masks move with the image)",
        _mask_loss_text(cxr.mask_loss),
        _init_text(cxr.init_weights),
        _split_text(split),
        f"- Data manifest `{meta.training_manifest_sha256[:16]}`; "
        f"code `{meta.code_version[:12] or 'unknown'}`; "
        + ", ".join(f"{k} {v}" for k, v in meta.library_versions.items()),
        "",
        "## Export",
        "",
        f"- ONNX opset {cxr.onnx_opset or '?'}, one self-contained file (sha256 in metadata.json)",
        _parity_text(parity),
        "",
        f"## Performance on {report.n} held-out images",
        "",
        f"Data manifest `{report.data_manifest_sha256[:16]}`.",
        "",
        "### Per label",
        "",
        "Each label is scored on the images whose truth the data set gives (`known`); an "
        "unknown label is left out, never counted as absent.",
        "",
        "| label | known (positive) | AUROC (95 % CI) | threshold | sensitivity (95 % CI) | "
        "specificity | ECE uncalibrated -> calibrated |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.labels:
        low, high = r.sensitivity_ci or (None, None)
        threshold = "none" if r.threshold is None else f"{r.threshold:.3f}"
        lines.append(
            f"| {r.label} | {r.n_known} ({r.auroc.n_positive}) | {_auroc_text(r.auroc)} | "
            f"{threshold} | "
            f"{_fmt(r.sensitivity)} ({_fmt(low)}-{_fmt(high)}) | {_fmt(r.specificity)} | "
            f"{_fmt(r.ece_uncalibrated)} -> {_fmt(r.ece)} |"
        )
    lines += ["", "## Operating points (chosen on validation data)", ""]
    for op in meta.operating_points:
        lines.append(
            f"- {op.label}: {op.threshold:.3f} ({op.chosen_on}; validation sensitivity "
            f"{_fmt(op.sensitivity)}, specificity {_fmt(op.specificity)})"
        )
    for label, why in cxr.no_operating_point.items():
        lines.append(f"- {label}: **no operating point**: {why}; the model never flags it")
    gates = cxr.gates
    if gates:
        lines += [
            "",
            "## Gates it passed",
            "",
            f"- Before training: every required label ({', '.join(gates['required_labels'])}) "
            f"with at least {gates['min_known_positives']} known positives in train, "
            "validation and test; a label needs as many in validation for an operating point",
            f"- On the test split: AUROC of each required label >= {gates['min_auroc']}; at "
            f"every operating point sensitivity >= {gates['min_sensitivity']} and "
            f"specificity >= {gates['min_specificity']}",
        ]
    lines += ["", "## Out-of-distribution gate", "", _ood_text(cxr.ood)]
    lines += ["", "## Drift reference", "", drift_text(cxr.training_distribution)]
    lines += [
        "",
        "## Localisation of the activation maps",
        "",
        PEAK_IN_MASK_DEFINITION + " IoU: mean IoU of the map thresholded at half its "
        "range with the same mask. Baselines: a map peaking at the image centre, and one "
        "fixed map of how often each point lies in these cases' masks (fitted on the same "
        "cases, so it flatters the baseline).",
        "",
        "| map | cases | n | peak in mask | IoU | centre: peak in mask | "
        "fixed prior map: peak in mask / IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report.localisation:
        m, c, p = row.model, row.centre, row.prior
        lines.append(
            f"| {row.finding} | {row.cases} | {m.n} | {_fmt(m.peak_in_mask)} | "
            f"{_fmt(m.mean_iou)} | {_fmt(c.peak_in_mask)} | "
            f"{_fmt(p.peak_in_mask)} / {_fmt(p.mean_iou)} |"
        )
    lines += [
        "",
        "## Subgroups (`abnormal`)",
        "",
        "| group | n | positives | AUROC | sensitivity | specificity |",
        "|---|---|---|---|---|---|",
    ]
    for s in report.subgroups:
        lines.append(
            f"| {s.group} | {s.n} | {s.n_positive} | {_fmt(s.auroc)} | "
            f"{_fmt(s.sensitivity)} | {_fmt(s.specificity)} |"
        )
    if previous is not None:
        lines += [
            "",
            f"## Side by side with {previous.model} (same data)",
            "",
            f"| label | {previous.model} AUROC | {report.model} AUROC |",
            "|---|---|---|",
        ]
        for r in report.labels:
            old = next((p for p in previous.labels if p.label == r.label), None)
            lines.append(
                f"| {r.label} | {_auroc_text(old.auroc if old else None)} | "
                f"{_auroc_text(r.auroc)} |"
            )
        lines.append(
            f"| map peak in mask | {_fmt(previous.headline_localisation().peak_in_mask)} | "
            f"{_fmt(report.headline_localisation().peak_in_mask)} |"
        )
        old_pairs, new_pairs = previous.finding_localisation(), report.finding_localisation()
        lines.append(
            "| findings' maps peak in own mask, per (image, finding) | "
            f"{_fmt(old_pairs.peak_in_mask if old_pairs else None)} | "
            f"{_fmt(new_pairs.peak_in_mask if new_pairs else None)} |"
        )
    lines += ["", "## Limitations", ""]
    lines += [f"- {item}" for item in meta.limitations] or ["- none recorded"]
    lines += ["", *[f"![{name}]({name})" for name in images], ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return folder
