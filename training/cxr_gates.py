"""Gates of ``tonle train cxr``: what is checked before training, and what a trained
model must show on held-out data before it is saved.

Pre-flight (:func:`preflight`, before any image is decoded or any step taken): the
``name:version`` is free in the model store, the configuration names only known labels,
the labels file is readable with every image on disk, the split assignment holds (no
patient in two splits, none empty), and each required label has enough known positives
in every split. Held out (:func:`held_out_failures`, on the TEST split, with the
exported model): each required label has an operating point and reaches the minimum
AUROC, and every operating point keeps the minimum sensitivity and specificity. A model
that fails is not saved; the thresholds are recorded in the model card.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from models.cxr_labels import CXR_LABELS

if TYPE_CHECKING:
    from training.cxr_data import PatientSplit
    from training.cxr_evaluate import CxrReport

__all__ = [
    "GateError",
    "GatesConfig",
    "PreflightError",
    "held_out_failures",
    "known_positives",
    "preflight",
]


class PreflightError(ValueError):
    """Training was refused before it started; the message names the check."""


class GateError(Exception):
    """The trained model failed a held-out gate and was not saved."""


class GatesConfig(BaseModel):
    """What a model must have and show (``gates:`` in ``configs/cxr.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    min_known_positives: int = Field(
        default=10,
        ge=1,
        description=(
            "Known positives a label needs in the validation split for an operating "
            "point (fewer: none, and the card says why); a required label needs them in "
            "train, validation and test before training starts."
        ),
    )
    required_labels: list[str] = Field(
        default_factory=lambda: ["abnormal"],
        description="Labels the model must have an operating point for to be saved.",
    )
    min_auroc: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Test AUROC each required label must reach."
    )
    min_sensitivity: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Test sensitivity every operating point must keep.",
    )
    min_specificity: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Test specificity every operating point must keep (0.000 flags everyone).",
    )


def known_positives(table: pd.DataFrame, label: str) -> int:
    """Rows whose ``label`` is known and positive (an empty cell is unknown)."""
    values = pd.to_numeric(table[label], errors="coerce")
    return int((values > 0).sum())


def preflight(
    labels_csv: Path,
    gates: GatesConfig,
    *,
    name: str,
    version: str,
    fractions: tuple[float, float, float],
    seed: int,
    sensitivity_labels: list[str],
) -> PatientSplit:
    """Refuse, before any training, what would fail later.

    Returns:
        The patient split of the labels file's rows.

    Raises:
        PreflightError: the first failed check, named, with what was found.
    """
    from models import registry
    from training.cxr_data import REQUIRED_COLUMNS, patient_split

    if any(m.version == version for m in registry.list_models(name)):
        raise PreflightError(
            f"pre-flight: {name}:{version} is already in the model store; set "
            "output.version to a new version"
        )
    unknown = sorted(set(gates.required_labels + sensitivity_labels) - set(CXR_LABELS))
    if unknown:
        raise PreflightError(
            f"pre-flight: config names unknown label(s) {unknown}; labels: {list(CXR_LABELS)}"
        )
    try:
        table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise PreflightError(f"pre-flight: cannot read {labels_csv}: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise PreflightError(f"pre-flight: {labels_csv} lacks column(s) {missing}")
    root = labels_csv.parent
    absent = [name for name in table["image"] if not (root / name).is_file()]
    if absent:
        raise PreflightError(
            f"pre-flight: {len(absent)} of {len(table)} images in {labels_csv} are not on "
            f"disk (first: {absent[0]})"
        )
    try:
        split = patient_split(table, fractions, seed)
    except ValueError as exc:
        raise PreflightError(f"pre-flight: {exc}") from exc
    for label in gates.required_labels:
        counts = {
            part: known_positives(table.iloc[idx], label)
            for part, idx in (
                ("train", split.train),
                ("validation", split.validation),
                ("test", split.test),
            )
        }
        short = {part: n for part, n in counts.items() if n < gates.min_known_positives}
        if short:
            raise PreflightError(
                f"pre-flight: required label {label!r} has too few known positives "
                f"{short} (gates.min_known_positives = {gates.min_known_positives})"
            )
    return split


def held_out_failures(report: CxrReport, gates: GatesConfig) -> list[str]:
    """Every held-out gate ``report`` fails (empty: the model may be saved)."""
    failures: list[str] = []
    for r in report.labels:
        if r.threshold is None:
            if r.label in gates.required_labels:
                failures.append(f"{r.label}: no operating point ({r.no_operating_point})")
            continue
        if r.label in gates.required_labels:
            auroc = r.auroc.value
            if auroc is None or auroc < gates.min_auroc:
                failures.append(
                    f"{r.label}: test AUROC {_text(auroc)} < gates.min_auroc {gates.min_auroc}"
                )
        for what, value, floor in (
            ("sensitivity", r.sensitivity, gates.min_sensitivity),
            ("specificity", r.specificity, gates.min_specificity),
        ):
            if value is not None and np.isfinite(value) and value < floor:
                failures.append(
                    f"{r.label}: test {what} {value:.3f} at its operating point "
                    f"< gates.min_{what} {floor}"
                )
    return failures


def _text(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"
