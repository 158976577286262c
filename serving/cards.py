"""CDS Hooks cards for NCD risk advice, in the caller's language (contract C6 text)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import cache
from typing import Literal

from serving.assess import Advice
from serving.cds_models import (
    SUMMARY_MAX,
    Action,
    Card,
    Coding,
    Link,
    OverrideReason,
    Source,
    Suggestion,
)
from serving.fhir_out import provenance, risk_assessment
from serving.i18n import format_date, t

__all__ = ["OVERRIDE_CODES", "OVERRIDE_SYSTEM", "Indicator", "ncd_card"]

Indicator = Literal["info", "warning", "critical"]
OVERRIDE_SYSTEM = "https://tonle.dev/fhir/CodeSystem/override-reason"
OVERRIDE_CODES = ("not-relevant", "already-managed", "disagree", "data-wrong", "other")
_SUGGESTION_KEY = {
    "cvd": "card.ncd.suggestion.followup",
    "diabetes": "card.ncd.suggestion.screen_diabetes",
}
_DISPLAY_UNIT = {"mm[Hg]": "mmHg", "kg/m2": "kg/m²", "a": "years", "1": ""}


def _value_text(name: str, value: float | str, unit: str, lang: str) -> str:
    if name == "sex":
        return t(f"value.{value}", lang)
    if unit == "1" or name in ("smoking", "diabetes", "bp_treated"):
        return t("value.yes" if float(value) >= 0.5 else "value.no", lang)
    shown_unit = t("unit.years", lang) if unit == "a" else _DISPLAY_UNIT.get(unit, unit)
    number = t("card.ncd.factor", lang, name="", value=float(value), unit=shown_unit)
    return number.strip()


def _factors(advice: Advice, lang: str) -> str:
    parts: list[str] = []
    units = {spec.name: spec.unit for spec in advice.metadata.features}
    for item in advice.contributions:
        name = (
            t(f"feature.{item.feature}", lang) if _has_feature_key(item.feature) else item.feature
        )
        value = advice.features.get(item.feature, item.value)
        sign = "+" if item.delta_risk >= 0 else "−"
        shown = _value_text(item.feature, value, units.get(item.feature, item.unit), lang)
        parts.append(f"{name} {shown} ({sign}{abs(item.delta_risk) * 100:.1f} pp)")
    return "; ".join(parts) or "—"


@cache
def _has_feature_key(name: str) -> bool:
    try:
        t(f"feature.{name}", "en")
    except KeyError:
        return False
    return True


def _data_used(advice: Advice, lang: str) -> str:
    header = f"| {t('ui.col.name', lang)} | {t('ui.col.value', lang)} | {t('ui.col.date', lang)} |"
    rows = [header, "|---|---|---|"]
    units = {spec.name: spec.unit for spec in advice.metadata.features}
    for name, value in advice.features.items():
        label = t(f"feature.{name}", lang) if _has_feature_key(name) else name
        when = advice.dates.get(name)
        shown = _value_text(name, value, units.get(name, "1"), lang)
        rows.append(f"| {label} | {shown} | {format_date(when, lang) if when else ''} |")
    return "\n".join(rows)


def _summary(advice: Advice, lang: str) -> str:
    text = t(f"card.ncd.{advice.outcome}.summary", lang, percent=advice.percent, band=advice.band)
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _detail(advice: Advice, lang: str, region: str) -> str:
    meta = advice.metadata
    factors = _factors(advice, lang)
    if advice.outcome == "cvd" and advice.who is not None:
        body = t(
            "card.ncd.cvd.detail",
            lang,
            percent=advice.percent,
            model=meta.name,
            version=meta.version,
            region=region,
            who_percent=advice.who.percent,
            band=advice.who.band,
            factors=factors,
        )
    elif advice.outcome == "cvd":
        body = t(
            "card.ncd.cvd.detail_no_who",
            lang,
            percent=advice.percent,
            model=meta.name,
            version=meta.version,
            factors=factors,
            reason=advice.who_note or "",
        )
    else:
        body = t(
            "card.ncd.diabetes.detail",
            lang,
            percent=advice.percent,
            model=meta.name,
            version=meta.version,
            factors=factors,
        )
    return "\n\n".join(
        [body, f"**{t('card.ncd.data_used', lang)}**\n\n{_data_used(advice, lang)}",
         f"_{t('advisory.statement', lang)}_"]
    )  # fmt: skip


def ncd_card(
    advice: Advice,
    *,
    lang: str,
    indicators: Sequence[Indicator],
    patient_id: str,
    encounter_id: str | None,
    explain_url: str,
    region: str,
    source_url: str | None = None,
) -> Card:
    """The card for one NCD assessment.

    Args:
        advice: The assessment.
        lang: Language of the text.
        indicators: Indicator for each risk band index 0-4 (site configuration).
        patient_id: FHIR id of the patient (for the RiskAssessment subject).
        encounter_id: FHIR id of the encounter, if any.
        explain_url: Absolute URL of the explanation page for this card.
        region: Display name of the WHO region or country whose chart is used.
        source_url: Where the model card can be read.
    """
    meta = advice.metadata
    card_id = str(uuid.uuid4())
    assessment_id = str(uuid.uuid4())
    assessment = risk_assessment(
        advice, resource_id=assessment_id, patient_id=patient_id, encounter_id=encounter_id
    )
    made_by = provenance(advice, target_id=assessment_id, resource_id=str(uuid.uuid4()))
    return Card(
        uuid=card_id,
        summary=_summary(advice, lang),
        detail=_detail(advice, lang, region),
        indicator=indicators[advice.band_index],
        source=Source(
            label=t("card.source.label", lang, model=meta.name, version=meta.version),
            url=source_url,
            topic=Coding(
                system="urn:tonle:model", code=meta.tag, display=f"sha256 {meta.sha256[:12]}"
            ),
        ),
        suggestions=[
            Suggestion(
                label=t(_SUGGESTION_KEY.get(advice.outcome, "card.ncd.suggestion.followup"), lang),
                uuid=str(uuid.uuid4()),
                isRecommended=False,
                actions=[
                    Action(
                        type="create",
                        description=t("card.ncd.action.record", lang),
                        resource=assessment,
                    ),
                    Action(
                        type="create",
                        description="Provenance",
                        resource=made_by,
                    ),
                ],
            )
        ],
        selectionBehavior="at-most-one",
        overrideReasons=[
            OverrideReason(system=OVERRIDE_SYSTEM, code=code, display=t(f"override.{code}", lang))
            for code in OVERRIDE_CODES
        ],
        links=[Link(label=t("card.link.explanation", lang), url=explain_url, type="absolute")],
    )
