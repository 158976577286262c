"""What a model artifact says about itself.

Every artifact Tonle serves is an ONNX file plus this metadata (a model artifact is
self-describing). Serving refuses an artifact whose metadata does not validate, whose
ONNX bytes do not hash to ``onnx_sha256``, or whose metadata and card do not hash to
``sha256`` (:mod:`models.registry`). What only one task records (an NCD model's
outcome and WHO comparison, an X-ray model's labels and calibration) is typed in
:mod:`models.details` and held in ``extra``; read it as ``meta.ncd`` or ``meta.cxr``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from models.details import CxrDetails, Details, NcdDetails

_D = TypeVar("_D", NcdDetails, CxrDetails)

__all__ = [
    "SEMVER",
    "FeatureSpec",
    "ImageSpec",
    "MetricValue",
    "ModelMetadata",
    "OperatingPoint",
    "OutputSpec",
]

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9a-z.]+)?$")
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One tabular input feature, in the units the model expects."""

    name: str = Field(description="Column name in the feature table, e.g. 'sbp'.")
    description: str = Field(description="Plain-words meaning, e.g. 'systolic blood pressure'.")
    unit: str = Field(description="UCUM unit, or '1' for dimensionless / 0-1 flags.")
    minimum: float | None = Field(default=None, description="Smallest valid value (inclusive).")
    maximum: float | None = Field(default=None, description="Largest valid value (inclusive).")
    loinc: str | None = Field(default=None, description="LOINC code the value comes from.")
    required: bool = Field(default=True, description="Whether a missing value means no advice.")


class ImageSpec(_Strict):
    """Image input contract: what preprocessing produces for the network."""

    size: int = Field(gt=0, description="Square side in pixels after resizing.")
    channels: int = Field(default=1, ge=1)
    photometric: str = Field(
        default="MONOCHROME2", description="Polarity after preprocessing (white = dense)."
    )
    value_range: tuple[float, float] = Field(default=(0.0, 1.0))
    normalisation: str = Field(default="", description="How pixel values were normalised.")


class OutputSpec(_Strict):
    """One model output tensor and what it means."""

    name: str
    meaning: str
    labels: list[str] = Field(default_factory=list, description="Per-column labels, if any.")


class OperatingPoint(_Strict):
    """A threshold chosen on validation data, with what it achieved there."""

    label: str
    threshold: float = Field(ge=0.0, le=1.0)
    sensitivity: float | None = Field(default=None, ge=0.0, le=1.0)
    specificity: float | None = Field(default=None, ge=0.0, le=1.0)
    chosen_on: str = Field(description="Data and rule, e.g. 'validation, sensitivity >= 0.90'.")


class MetricValue(_Strict):
    """A metric with its 95 % confidence interval when one was computed."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None


class ModelMetadata(_Strict):
    """Metadata stored next to every ONNX artifact in the model store."""

    name: str = Field(description="Lower-case model name, e.g. 'cvd-risk'.")
    version: str = Field(description="Semantic version, e.g. '1.0.0'.")
    task: Literal["ncd-risk", "cxr-triage", "test"] = Field(description="What the model is for.")
    sha256: str = Field(
        default="",
        description="The artifact's identity: sha256 over this metadata and the model card "
        "(models.registry.artifact_digest); set on save.",
    )
    onnx_sha256: str = Field(default="", description="sha256 of the ONNX bytes; set on save.")
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    description: str = ""
    features: list[FeatureSpec] = Field(default_factory=list)
    image: ImageSpec | None = None
    inputs: dict[str, list[int | str]] = Field(
        default_factory=dict, description="ONNX input name -> shape ('N' for batch)."
    )
    outputs: list[OutputSpec] = Field(default_factory=list)
    operating_points: list[OperatingPoint] = Field(default_factory=list)
    training_manifest_sha256: str = Field(default="", description="Hash of the training data.")
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    lookback_days: int | None = Field(
        default=None,
        gt=0,
        description="Tabular models: the oldest measurement training read, in days before "
        "the index date. None: unknown (a ready-made feature table, or an older artifact).",
    )
    intended_use: str = ""
    limitations: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict, description="Resolved training config.")
    code_version: str = Field(default="", description="git commit the artifact was built from.")
    library_versions: dict[str, str] = Field(default_factory=dict)
    changelog: str = ""
    extra: Details | None = Field(
        default=None,
        description="What this task records (models.details): NcdDetails for 'ncd-risk', "
        "CxrDetails for 'cxr-triage', none for 'test'; in JSON an object ({} for none).",
    )

    @model_validator(mode="before")
    @classmethod
    def _details_for_task(cls, data: Any) -> Any:
        """Validate ``extra`` as the details class of ``task`` (not whichever fits)."""
        if not isinstance(data, dict) or "task" not in data:
            return data
        task, raw = data["task"], data.get("extra")
        expected = _DETAILS.get(task)
        if expected is None:  # "test" (or an unknown task, refused by its own field)
            if raw and task == "test":
                raise ValueError("a 'test' artifact carries no details: 'extra' must be empty")
            return {**data, "extra": None}
        if isinstance(raw, NcdDetails | CxrDetails):
            if not isinstance(raw, expected):
                raise ValueError(
                    f"a {task!r} artifact cannot carry {type(raw).__name__}; it needs "
                    f"{expected.__name__}"
                )
            return data
        try:
            details = expected.model_validate(raw if raw is not None else {})
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in errors
            )
            unknown = any(e["type"] == "extra_forbidden" for e in errors)
            raise ValueError(
                f"'extra' is not valid {expected.__name__} for a {task!r} artifact ({problems})"
                + ("; a key this version does not know is refused, not dropped" if unknown else "")
            ) from None
        return {**data, "extra": details}

    @model_serializer(mode="wrap")
    def _serialise(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        # The details as they were set, whatever the options (exclude_defaults would
        # otherwise drop nested fields an artifact wrote): an artifact serialises as it
        # was written and its identity (models.registry.artifact_digest) still verifies.
        if "extra" in out:
            details = self.extra
            out["extra"] = (
                {} if details is None else details.model_dump(mode=info.mode, exclude_unset=True)
            )
        return out

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"model name {value!r} is not allowed: use 2-63 lower-case letters, "
                "digits and '-', starting with a letter"
            )
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError(f"version {value!r} is not a semantic version like '1.2.0'")
        return value

    @property
    def tag(self) -> str:
        """The store tag, ``name:version``."""
        return f"{self.name}:{self.version}"

    @property
    def ncd(self) -> NcdDetails:
        """The details of an ``ncd-risk`` artifact.

        Raises:
            ValueError: the artifact is of another task.
        """
        return self._details(NcdDetails, "ncd-risk")

    @property
    def cxr(self) -> CxrDetails:
        """The details of a ``cxr-triage`` artifact.

        Raises:
            ValueError: the artifact is of another task.
        """
        return self._details(CxrDetails, "cxr-triage")

    def _details(self, kind: type[_D], task: str) -> _D:
        if not isinstance(self.extra, kind):
            raise ValueError(f"{self.tag} is a {self.task!r} model, not {task!r}")
        return self.extra

    @property
    def synthetic_training_data(self) -> bool:
        """Whether training recorded generated (demo) data; False for a ``test`` model."""
        return self.extra is not None and self.extra.synthetic_training_data


_DETAILS: dict[str, type[NcdDetails] | type[CxrDetails]] = {
    "ncd-risk": NcdDetails,
    "cxr-triage": CxrDetails,
}
