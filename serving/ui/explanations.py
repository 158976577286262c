"""What the NCD explanation page shows for one card, built from the card's advice.

The CDS Hooks service turns each card's :class:`~serving.assess.Advice` into an
:class:`NcdExplanation` and stores it (:func:`explanation_record`) with the call's
audit row, in the same commit, keyed by the card uuid; the card links to
``/ui/explain/{card uuid}``, which any worker or replica on the same database can
then show until the retention limit. The page shows exactly what the card was computed
from, with the same model identity, plus WHO chart "what if" risks (computed when the
page is shown). Nothing is recomputed from data the page cannot see.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.metadata import MetricValue, ModelMetadata
from models.ncd_predictor import Contribution
from models.ncd_support import Outside
from models.who_cvd import WhoCvdInputError, WhoCvdInputs, WhoCvdResult, who_cvd_risk
from serving.assess import Advice, WhoSettings, model_shown
from serving.audit.records import ExplanationRecord
from serving.protocol import Text
from serving.synthetic import trained_on_synthetic

__all__ = [
    "FACTOR_FULL_SCALE",
    "RAISES_RISK",
    "ComparisonView",
    "ModelView",
    "NcdExplanation",
    "ProtocolView",
    "RuleView",
    "WhatIf",
    "explanation_record",
    "headline_metrics",
    "unlike_clinical",
    "what_ifs",
]


FACTOR_FULL_SCALE = 0.10
"""A factor bar's full width: 10 percentage points of risk, the same on every page
(a bar is never scaled to the largest factor of one patient)."""

RAISES_RISK: dict[str, frozenset[str]] = {
    "cvd": frozenset({"age", "sbp", "total_chol", "smoking", "diabetes", "bmi"}),
    "diabetes": frozenset({"age", "bmi"}),
}
"""Inputs whose higher value (or presence) raises the outcome's risk in clinical
knowledge; a model factor going the other way is flagged, never hidden."""


def unlike_clinical(outcome: str, factor: Contribution, reference: dict[str, float]) -> bool:
    """Whether ``factor`` moves the risk against its known clinical direction.

    A value above the reference that lowers the risk (or below it that raises it),
    for an input in :data:`RAISES_RISK`; False when the reference is unknown.
    """
    ref = reference.get(factor.feature)
    if factor.feature not in RAISES_RISK.get(outcome, frozenset()) or ref is None:
        return False
    if factor.value == ref or abs(factor.delta_risk) < 0.0005:
        return False
    return (factor.delta_risk > 0) != (factor.value > ref)


def headline_metrics(metrics: dict[str, Any], limit: int = 6) -> dict[str, Any]:
    """The test-split metrics a clinician reads first (the model card has the rest)."""
    order = ("auroc", "harrell_c", "calibration_slope", "brier", "sensitivity", "specificity")
    test = {k: v for k, v in metrics.items() if k.startswith("test_")}
    if not test:
        return dict(list(metrics.items())[:limit])
    ranked = sorted(test, key=lambda k: next((i for i, o in enumerate(order) if o in k), 99))
    headline = {k: test[k] for k in ranked[:limit]}
    if "who_test_auroc" in metrics and limit < 50:
        headline["who_test_auroc"] = metrics["who_test_auroc"]
    return headline


class ModelView(BaseModel):
    """The model identity and the validation facts a clinician may check."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    sha256: str
    task: str
    intended_use: str = ""
    limitations: list[str] = Field(default_factory=list)
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    synthetic: bool = Field(
        default=False, description="Trained on synthetic data: a demo model, not for clinical use."
    )

    @classmethod
    def from_metadata(cls, meta: ModelMetadata) -> ModelView:
        """Copy the identity fields and headline metrics of an artifact's metadata."""
        return cls(
            name=meta.name,
            version=meta.version,
            sha256=meta.sha256,
            task=meta.task,
            intended_use=meta.intended_use,
            limitations=list(meta.limitations),
            metrics=headline_metrics(meta.metrics),
            synthetic=trained_on_synthetic(meta),
        )


class WhatIf(BaseModel):
    """The WHO chart risk if one modifiable value were different."""

    model_config = ConfigDict(frozen=True)

    change: Literal["sbp", "smoking", "chol", "bmi"]
    value: float | None = Field(description="The changed value (None for stopping smoking).")
    percent: int
    band: str
    band_index: int


class ComparisonView(BaseModel):
    """The model and the WHO chart on the same test patients, as training recorded it
    (``metadata.ncd.who_comparison``): why the model is, or is not, shown."""

    model_config = ConfigDict(frozen=True)

    n: int | None = None
    auroc_model: float | None = None
    auroc_who: float | None = None
    at_least_as_good: bool = False
    accepted_reason: str | None = None

    @classmethod
    def from_metadata(cls, meta: ModelMetadata) -> ComparisonView | None:
        """The recorded comparison, or None when the artifact records none."""
        recorded = meta.ncd.who_comparison
        if recorded is None:
            return None
        return cls(
            n=recorded.n,
            auroc_model=recorded.auroc_model.value,
            auroc_who=recorded.auroc_who.value,
            at_least_as_good=recorded.at_least_as_good,
            accepted_reason=recorded.accepted_reason,
        )


class RuleView(BaseModel):
    """A protocol row that fired for the card, with its source."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: Text
    document: str
    section: str
    proposals: list[Text] = Field(default_factory=list, description="What it proposed.")


class ProtocolView(BaseModel):
    """The protocol table the card followed, its approval and the rows that fired."""

    model_config = ConfigDict(frozen=True)

    version: str
    sha256: str
    approved_by: str | None = None
    approved_on: date | None = None
    rules: list[RuleView] = Field(default_factory=list)

    @classmethod
    def from_advice(cls, advice: Advice) -> ProtocolView | None:
        """The protocol part of ``advice`` (None when no protocol was applied)."""
        protocol = advice.protocol
        if protocol is None:
            return None
        approval = protocol.approval if protocol.approved else None
        return cls(
            version=protocol.table.version,
            sha256=protocol.sha256,
            approved_by=approval.by if approval else None,
            approved_on=approval.on if approval else None,
            rules=[
                RuleView(
                    id=f.row.id,
                    text=f.row.text,
                    document=f.row.source.document,
                    section=f.row.source.section,
                    proposals=[p.text for p in f.proposals],
                )
                for f in advice.fired
            ],
        )


class NcdExplanation(BaseModel):
    """Everything the NCD explanation page shows for one card (no names, no identifiers)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["ncd"] = "ncd"
    id: str = Field(description="The card uuid this explains.")
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    service_id: str
    outcome: str = Field(description="'cvd' or 'diabetes'.")
    risk: float
    percent: int
    band: str
    band_index: int
    features: dict[str, float | str]
    units: dict[str, str] = Field(default_factory=dict)
    dates: dict[str, date] = Field(default_factory=dict)
    contributions: list[Contribution]
    model: ModelView
    who: WhoCvdResult | None = None
    who_note: str | None = None
    who_reason: str | None = None
    model_shown: bool = Field(
        default=True,
        description="The model's estimate is on the card: its recorded validation shows it "
        "at least as good as the WHO chart on the same patients (or there is no chart).",
    )
    protocol: ProtocolView | None = None
    comparison: ComparisonView | None = None
    who_region: str | None = None
    who_country: str | None = None
    missing: dict[str, float | None] = Field(
        default_factory=dict,
        description="Optional inputs not recorded -> the value the model scored them as "
        "(None: no single value).",
    )
    outside_support: list[Outside] = Field(
        default_factory=list,
        description="Measured values outside the model's training range (model not shown).",
    )
    support_known: bool = Field(
        default=True, description="The artifact records its training range (older ones do not)."
    )
    reference: dict[str, float] = Field(
        default_factory=dict,
        description="The reference value each factor is compared with (metadata.ncd).",
    )

    @classmethod
    def from_advice(
        cls,
        advice: Advice,
        *,
        card_uuid: str,
        service_id: str,
        who_settings: WhoSettings | None = None,
    ) -> NcdExplanation:
        """The explanation of one piece of advice.

        Args:
            advice: What :func:`serving.assess.assess` returned.
            card_uuid: The card this explains (feedback is stored against it).
            service_id: CDS service (or route) that gave the advice.
            who_settings: The WHO recalibration the advice used.
        """
        settings = who_settings or WhoSettings()
        model, comparison, reference = _model_parts(advice.metadata)
        return cls(
            id=card_uuid,
            service_id=service_id,
            outcome=advice.outcome,
            risk=advice.risk,
            percent=advice.percent,
            band=advice.band,
            band_index=advice.band_index,
            features=dict(advice.features),
            missing=dict(advice.missing),
            reference=reference,
            units=dict(advice.units),
            dates=dict(advice.dates),
            contributions=list(advice.contributions),
            model=model,
            who=advice.who,
            who_note=advice.who_note,
            who_reason=advice.who_reason,
            model_shown=model_shown(advice),
            outside_support=list(advice.outside_support),
            support_known=advice.support_known,
            protocol=ProtocolView.from_advice(advice),
            comparison=comparison,
            who_region=settings.region,
            who_country=settings.country,
        )

    def unlike_clinical(self, factor: Contribution) -> bool:
        """Whether a factor goes against its known clinical direction (see module)."""
        return unlike_clinical(self.outcome, factor, self.reference)

    def what_ifs(self) -> list[WhatIf]:
        """The WHO chart "what if" risks (none without a WHO chart result)."""
        if self.who is None:
            return []
        return what_ifs(self.who, WhoSettings(self.who_region, self.who_country))


_ModelParts = tuple[ModelView, ComparisonView | None, dict[str, float]]
_MODEL_PARTS: dict[int, tuple[ModelMetadata, _ModelParts]] = {}  # id -> (kept alive, parts)


def _model_parts(meta: ModelMetadata) -> _ModelParts:
    """What every explanation of ``meta``'s answers repeats (its identity, its recorded
    comparison with the chart, the factors' reference values), built once per model."""
    kept = _MODEL_PARTS.get(id(meta))
    if kept is None or kept[0] is not meta:
        if len(_MODEL_PARTS) >= 64:  # models replaced many times (tests): start again
            _MODEL_PARTS.clear()
        reference = {k: float(v) for k, v in meta.ncd.reference.items()}
        parts = (ModelView.from_metadata(meta), ComparisonView.from_metadata(meta), reference)
        kept = _MODEL_PARTS[id(meta)] = (meta, parts)
    return kept[1]


def explanation_record(
    advice: Advice,
    *,
    card_uuid: str,
    service_id: str,
    who_settings: WhoSettings | None,
    retention: timedelta,
) -> ExplanationRecord:
    """The stored form of a card's explanation, kept for ``retention``."""
    ex = NcdExplanation.from_advice(
        advice, card_uuid=card_uuid, service_id=service_id, who_settings=who_settings
    )
    return ExplanationRecord(
        card_uuid=card_uuid,
        service_id=service_id,
        created=ex.created,
        expires=ex.created + retention,
        content=ex.model_dump_json(),
        band=ex.band,
    )


def what_ifs(who: WhoCvdResult, settings: WhoSettings) -> list[WhatIf]:
    """WHO 2019 equation risks with one modifiable factor at a target (HEARTS targets).

    The equation at the patient's other exact values, not a chart cell: a target sits
    on a cell boundary (5 mmol/L opens the 5-5.9 cell), so a cell would stand for a
    range, not the target. The page labels these numbers as the equation's.

    Systolic BP 130 mmHg (when above), stopping smoking, total cholesterol 5 mmol/L
    (lab chart, when above) or BMI 25 kg/m2 (non-lab chart, when above).
    """
    used = who.inputs_used
    base = {
        k: used[k]
        for k in ("sex", "age", "smoking", "sbp", "total_chol", "diabetes", "bmi")
        if k in used
    }
    changes: list[tuple[Literal["sbp", "smoking", "chol", "bmi"], str, object, float | None]] = []
    if float(base["sbp"]) > 130:  # type: ignore[arg-type]
        changes.append(("sbp", "sbp", 130.0, 130.0))
    if base.get("smoking"):
        changes.append(("smoking", "smoking", False, None))
    if who.model == "lab" and float(base.get("total_chol", 0)) > 5:  # type: ignore[arg-type]
        changes.append(("chol", "total_chol", 5.0, 5.0))
    if who.model == "nonlab" and float(base.get("bmi", 0)) > 25:  # type: ignore[arg-type]
        changes.append(("bmi", "bmi", 25.0, 25.0))
    out: list[WhatIf] = []
    for change, key, new, shown in changes:
        try:
            result = who_cvd_risk(
                WhoCvdInputs.model_validate({**base, key: new}),
                who.model,
                region=settings.region,
                country=settings.country,
            )
        except WhoCvdInputError:
            continue
        out.append(
            WhatIf(
                change=change,
                value=shown,
                percent=result.percent,
                band=result.band,
                band_index=result.band_index,
            )
        )
    return out
