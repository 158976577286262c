"""The training config of a 10-year NCD risk model (``configs/cvd-risk.yaml``, ...).

Loaded once at the entry point with :func:`models.config.load_config` into
:class:`NcdTrainConfig` and passed down; stored in full in every artifact's metadata.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CalibrationConfig",
    "EvaluationConfig",
    "ExportConfig",
    "GateConfig",
    "HgbConfig",
    "LogisticConfig",
    "NcdTrainConfig",
    "SplitConfig",
]


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Cfg):
    """Patient-level split fractions (the rest is the test split)."""

    train: float = Field(default=0.7, gt=0, lt=1)
    validation: float = Field(default=0.15, gt=0, lt=1)


class HgbConfig(_Cfg):
    """HistGradientBoostingClassifier hyperparameters."""

    learning_rate: float = Field(default=0.06, gt=0)
    max_iter: int = Field(default=300, ge=1)
    max_leaf_nodes: int = Field(default=15, ge=2)
    min_samples_leaf: int = Field(default=50, ge=1)
    l2_regularization: float = Field(default=1.0, ge=0)
    early_stopping: bool = True
    monotonic: dict[str, Literal[-1, 0, 1]] = Field(
        default_factory=dict, description="feature -> +1 (risk never falls as it rises) / -1"
    )


class LogisticConfig(_Cfg):
    """Regularised (L2) logistic regression baseline."""

    C: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=500, ge=10)


class CalibrationConfig(_Cfg):
    """Post-hoc calibration; only sigmoid exports exactly (docs/performance.md)."""

    method: Literal["sigmoid"] = "sigmoid"
    folds: int = Field(default=3, ge=2)


class EvaluationConfig(_Cfg):
    """Test-split evaluation."""

    bootstrap_reps: int = Field(default=200, ge=0)
    who_model: Literal["lab", "nonlab"] = "lab"
    who_missing_smoking_as_non_smoker: bool = False
    who_region: str | None = "A05GBDR_014_SEA"
    who_country: str | None = None


class ExportConfig(_Cfg):
    """ONNX parity check before saving: on min(parity_max_rows, rows available) rows."""

    parity_min_rows: int = Field(default=1_000, ge=1, description="floor, checked before fitting")
    parity_max_rows: int = Field(default=10_000, ge=1)


class GateConfig(_Cfg):
    """What a model must show before it is saved (recorded in the card and metadata).

    Before fitting: at least ``min_events_per_predictor`` events (within the horizon,
    training split) per model input. After: test AUROC at least ``min_test_auroc``.
    Against the WHO chart on the same test patients (CVD), *at least as good* means
    both: discrimination, the lower 95 % bootstrap bound of AUROC(model) - AUROC(chart)
    above ``-auroc_margin``; calibration, the model's calibration slope inside
    ``slope_limits`` and its observed/expected ratio inside ``oe_limits`` (point
    estimates; their CIs are recorded). Otherwise the model is saved only with
    ``--accept-worse-than-who REASON``.
    """

    min_events_per_predictor: float = Field(default=10.0, ge=0)
    min_test_auroc: float = Field(default=0.6, ge=0, le=1)
    auroc_margin: float = Field(default=0.02, ge=0, le=0.5)
    slope_limits: tuple[float, float] = (0.8, 1.25)
    oe_limits: tuple[float, float] = (0.8, 1.25)


class NcdTrainConfig(_Cfg):
    """A training config (``configs/cvd-risk.yaml``, ``configs/diabetes-risk.yaml``)."""

    name: str
    version: str
    outcome: Literal["cvd", "diabetes"]
    description: str
    intended_use: str
    limitations: list[str] = Field(default_factory=list)
    horizon_years: float = Field(default=10.0, gt=0)
    seed: int = 0
    threads: int = Field(default=1, ge=1)
    features: list[str]
    required: list[str]
    exclude_prevalent_diabetes: bool = False
    drop_incomplete: bool = False
    min_age: float = 18.0
    max_age: float = 110.0
    reference: dict[str, float]
    labels: dict[str, str] = Field(default_factory=dict)
    candidates: list[Literal["hgb", "logistic"]] = ["hgb", "logistic"]
    split: SplitConfig = Field(default_factory=SplitConfig)
    hgb: HgbConfig = Field(default_factory=HgbConfig)
    logistic: LogisticConfig = Field(default_factory=LogisticConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    gates: GateConfig = Field(default_factory=GateConfig)
