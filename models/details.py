"""What each kind of model records about itself beyond the common metadata.

:class:`~models.metadata.ModelMetadata` holds what every artifact has (name, version,
inputs, outputs, operating points, metrics); the task-specific rest is one of the
classes here, chosen by the artifact's ``task``: :class:`NcdDetails` for ``ncd-risk``,
:class:`CxrDetails` for ``cxr-triage`` (a ``test`` artifact has none). In
``metadata.json`` they are the ``extra`` object, as they were when it was an untyped
dictionary.

Identity. An artifact's identity (:func:`models.registry.artifact_digest`) hashes the
metadata as it serialises, so loading and serialising again must give back the same
JSON: details serialise only the fields that were set (a key an older artifact lacks
stays absent, a ``null`` stays ``null``), and a number that may have been written as
an integer (:data:`Number`) keeps its type; a flag is ``true`` or ``false``, never a
string that reads like one. A key this version does not know is
refused (``extra="forbid"``): the artifact does not load rather than lose it.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from models.ncd_support import InputSupport

__all__ = [
    "CalibrationCheck",
    "CxrCalibration",
    "CxrDetails",
    "CxrParityReport",
    "CxrSplit",
    "Details",
    "FeatureBins",
    "MaskLoss",
    "MetricCI",
    "MissingInput",
    "NcdDetails",
    "NcdParityReport",
    "Number",
    "OodSummary",
    "ParentRef",
    "PlattParams",
    "Recalibration",
    "WhoComparison",
]

Number: TypeAlias = int | float
"""A number stored as written: ``0`` stays an integer, ``0.0`` a float (see module)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureBins(_Strict):
    """One input's training distribution: ascending cut points and bin shares."""

    edges: list[float] = Field(
        description="Inner cut points, ascending; bin i: edges[i-1] <= x < edges[i]."
    )
    proportions: list[float] = Field(description="Share of training rows per bin (sums to 1).")
    n: int = Field(ge=1, description="Training rows with a value.")

    @model_validator(mode="after")
    def _consistent(self) -> FeatureBins:
        if len(self.proportions) != len(self.edges) + 1:
            raise ValueError("proportions must have one more entry than edges")
        if any(not math.isfinite(e) for e in self.edges) or self.edges != sorted(set(self.edges)):
            raise ValueError("edges must be finite and strictly ascending")
        if any(p < 0 for p in self.proportions) or abs(sum(self.proportions) - 1) > 1e-6:
            raise ValueError("proportions must be non-negative and sum to 1")
        return self


class MetricCI(_Strict):
    """A point estimate with its percentile bootstrap 95 % CI."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None


class WhoComparison(_Strict):
    """The model and the WHO chart on the same test patients, with paired bootstrap CIs
    (written by :func:`training.ncd_gates.compare_with_who`)."""

    rule: str = Field(description="The rule 'at least as good as the chart', in words.")
    chart: str = Field(description="Which chart, and for which region or country.")
    n: int = Field(description="Test patients the chart gives a risk for.")
    events: int
    auroc_model: MetricCI
    auroc_who: MetricCI
    auroc_difference: MetricCI
    calibration_slope_model: MetricCI
    calibration_slope_who: MetricCI
    observed_expected_model: MetricCI
    observed_expected_who: MetricCI
    auroc_margin: float
    slope_limits: tuple[float, float]
    oe_limits: tuple[float, float]
    discrimination_ok: StrictBool
    calibration_ok: StrictBool
    at_least_as_good: StrictBool = Field(
        description="Only then does a card show the model's estimate beside the chart."
    )
    accepted_reason: str | None = Field(
        default=None, description="Why a model not at least as good was saved anyway."
    )


class NcdParityReport(_Strict):
    """ONNX vs scikit-learn on the same rows."""

    n_rows: int
    max_abs_diff: float
    band_mismatches: int
    tolerance: float

    @property
    def ok(self) -> bool:
        """Whether the export is faithful enough to serve."""
        return self.max_abs_diff <= self.tolerance and self.band_mismatches == 0


class MissingInput(_Strict):
    """An optional input: how often training lacked it, and what a missing one means."""

    missing_in_training: float = Field(description="Share of training rows without it.")
    scored_as: float | None = Field(
        description="The value the model scores a missing input as; None when no single "
        "value does (training.ncd_missing)."
    )


class ParentRef(_Strict):
    """The artifact a recalibrated model was made from."""

    tag: str
    sha256: str


class CalibrationCheck(_Strict):
    """Calibration of one set of risks on the recalibration data."""

    observed_expected: float | None
    calibration_slope: float | None


class Recalibration(_Strict):
    """A local logistic recalibration of a parent model (training.ncd_recalibrate)."""

    intercept: float
    slope: float
    rows: int
    events: int
    data_manifest_sha256: str
    before: CalibrationCheck
    after_in_sample: CalibrationCheck
    max_abs_diff_vs_formula: float = Field(
        description="The new graph against the recalibration formula, largest difference."
    )


class _Details(_Strict):
    synthetic_training_data: StrictBool = Field(
        default=False, description="Trained on generated data: a demo, not for clinical use."
    )
    training_distribution: dict[str, FeatureBins] = Field(
        default_factory=dict,
        description="Per monitored quantity (an input, an image statistic, a score), its "
        "training distribution; serving compares live traffic with it (drift).",
    )


class NcdDetails(_Details):
    """What an ``ncd-risk`` artifact records (written by training.ncd_train)."""

    outcome: Literal["cvd", "diabetes"] = Field(description="The event the risk is of.")
    horizon_years: Number = Field(default=10.0, gt=0, description="Risk horizon in years.")
    reference: dict[str, Number] = Field(
        default_factory=dict,
        description="Per input, the reference value its contribution is explained against.",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Input -> words.")
    encodings: dict[str, dict[str, Number]] = Field(
        default_factory=dict,
        description="Categorical input -> category -> the number the model reads.",
    )
    estimator: str | None = Field(default=None, description="The candidate training chose.")
    validation: dict[str, dict[str, float | None]] = Field(
        default_factory=dict,
        description="Candidate estimator -> its validation scores (brier, auroc, fit_seconds).",
    )
    split_counts: dict[str, int] = Field(
        default_factory=dict, description="Rows per split (train, val, test)."
    )
    censoring: str | None = Field(default=None, description="How censoring was handled.")
    missing_inputs: dict[str, MissingInput] = Field(
        default_factory=dict, description="Per optional input, measured at training."
    )
    input_support: InputSupport | None = Field(
        default=None, description="The training range of each input (models.ncd_support)."
    )
    who_comparison: WhoComparison | None = Field(
        default=None,
        description="Against the WHO chart; None: no comparison (diabetes, or recalibrated).",
    )
    parity: NcdParityReport | None = Field(default=None, description="The export's check.")
    parent: ParentRef | None = Field(default=None, description="A recalibrated model's parent.")
    recalibration: Recalibration | None = None
    card_dir: str | None = Field(default=None, description="Where training wrote the card.")


class PlattParams(_Strict):
    """p = sigmoid(scale * logit + offset)."""

    scale: float
    offset: float


class CxrCalibration(_Strict):
    """How raw logits become probabilities, per label."""

    method: Literal["platt"] = "platt"
    params: dict[str, PlattParams] = Field(default_factory=dict)


class CxrParityReport(_Strict):
    """Largest differences between PyTorch and ONNX Runtime outputs.

    Logits are compared absolutely. The map is compared on the scale it is shown at:
    each map's difference divided by that map's range (the heatmap is drawn min-max
    scaled), or absolutely where the range is below 1. A raw map's scale grows with
    training (the demo model's maps span -31 to 127), and float32 alone cannot hold
    it to 1e-4 absolute: PyTorch in float32 differed from the same network in float64
    by 1.0e-4 on such maps, ONNX Runtime by 4.9e-5, each other by 1.3e-4, that is
    3.7e-6 of the map's range.
    """

    n_images: int
    max_abs_diff_logits: float
    max_abs_diff_cam: float
    max_scaled_diff_cam: float
    atol: float

    @property
    def ok(self) -> bool:
        """Whether the logits and the scaled map are within ``atol``."""
        return max(self.max_abs_diff_logits, self.max_scaled_diff_cam) <= self.atol


class MaskLoss(_Strict):
    """The localisation loss training used."""

    weight: float
    images: int = Field(description="Training images with at least one finding mask.")
    pairs: dict[str, int] = Field(
        default_factory=dict, description="Positive (image, label) pairs by mask kind."
    )


class CxrSplit(_Strict):
    """Images per split, and how the split was made."""

    train: int
    validation: int
    test: int
    source: str = ""


class OodSummary(_Strict):
    """The out-of-distribution gate in the graph, without its matrices
    (:meth:`models.cxr_ood.OodGate.describe`)."""

    method: str
    dims: int
    threshold: float
    quantile: float
    shrinkage: float
    fitted_on: str
    threshold_on: str
    refused_test: float | None = Field(
        default=None, description="Share of test images (not used to set it) it refuses."
    )
    n_test: int | None = Field(default=None, description="Test images that share is of.")


class CxrDetails(_Details):
    """What a ``cxr-triage`` artifact records (models.cxr_export.cxr_metadata)."""

    labels: list[str] = Field(min_length=1, description="The output columns, in order.")
    cam_shape: tuple[int, int] | None = Field(default=None, description="Map (h, w).")
    calibration: CxrCalibration = Field(default_factory=CxrCalibration)
    onnx_opset: int | None = None
    arch: str | None = Field(default=None, description="The MONAI network.")
    mask_loss: MaskLoss | None = None
    parity: CxrParityReport | None = Field(default=None, description="The export's check.")
    split: CxrSplit | None = None
    no_operating_point: dict[str, str] = Field(
        default_factory=dict, description="Label -> why it has no operating point."
    )
    init_weights: dict[str, Any] | None = Field(
        default=None,
        description="Free-form: the pretrained weights file's report and the fine-tuning "
        "settings (training.cxr_init); None: trained from scratch.",
    )
    ood: OodSummary | None = Field(
        default=None, description="None: no out-of-distribution gate in the graph."
    )
    gates: dict[str, Any] | None = Field(
        default=None, description="Free-form: the held-out gate settings training applied."
    )


Details: TypeAlias = NcdDetails | CxrDetails
