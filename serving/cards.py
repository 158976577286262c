"""CDS Hooks cards for NCD risk advice, in the caller's language (contract C6 text)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import cache
from typing import Literal

from models.metadata import ModelMetadata
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
from serving.i18n import format_date, format_number, t

__all__ = [
    "OVERRIDE_CODES",
    "OVERRIDE_SYSTEM",
    "Indicator",
    "MissingHow",
    "feature_label",
    "missing_how",
    "missing_text",
    "model_source",
    "ncd_card",
    "value_text",
]

Indicator = Literal["info", "warning", "critical"]
OVERRIDE_SYSTEM = "https://tonle.dev/fhir/CodeSystem/override-reason"
OVERRIDE_CODES = ("not-relevant", "already-managed", "disagree", "data-wrong", "other")
_SUGGESTION_KEY = {
    "cvd": "card.ncd.suggestion.followup",
    "diabetes": "card.ncd.suggestion.screen_diabetes",
}
_DISPLAY_UNIT = {"mm[Hg]": "mmHg", "kg/m2": "kg/m²", "a": "years", "1": ""}


def value_text(name: str, value: float | str, unit: str, lang: str) -> str:
    """One input value as cards and explanation pages show it (same digits on both)."""
    if name == "sex":
        return t(f"value.{value}", lang)
    if unit == "1" or name in ("smoking", "diabetes", "bp_treated"):
        return t("value.yes" if float(value) >= 0.5 else "value.no", lang)
    shown_unit = t("unit.years", lang) if unit == "a" else _DISPLAY_UNIT.get(unit, unit)
    number = t("card.ncd.factor", lang, name="", value=float(value), unit=shown_unit)
    return number.strip()


def _value_texts(advice: Advice, lang: str) -> dict[str, str]:
    """Each used value as shown on the card (the factors and the data table share them)."""
    units = {spec.name: spec.unit for spec in advice.metadata.features}
    return {
        name: value_text(name, value, units.get(name, "1"), lang)
        for name, value in advice.features.items()
    }


def feature_label(name: str, lang: str) -> str:
    """The feature's name in ``lang``; the field name itself where none is translated."""
    return t(f"feature.{name}", lang) if _has_feature_key(name) else name


def _factors(advice: Advice, lang: str, shown: dict[str, str]) -> str:
    parts: list[str] = []
    for item in advice.contributions:
        sign = "+" if item.delta_risk >= 0 else "−"
        text = shown.get(item.feature) or value_text(item.feature, item.value, item.unit, lang)
        # Points in the language's digits and decimal mark, as every other number.
        points = format_number(abs(item.delta_risk) * 100.0, lang, 1)
        parts.append(f"{feature_label(item.feature, lang)} {text} ({sign}{points} pp)")
    return "; ".join(parts) or "—"


@cache
def _override_reasons(lang: str) -> tuple[OverrideReason, ...]:
    # The same for every card in a language; cards only serialise them.
    return tuple(
        OverrideReason(system=OVERRIDE_SYSTEM, code=code, display=t(f"override.{code}", lang))
        for code in OVERRIDE_CODES
    )


@cache
def _has_feature_key(name: str) -> bool:
    try:
        t(f"feature.{name}", "en")
    except KeyError:
        return False
    return True


MissingHow = Literal["value", "branch", "route", "unmeasured"]


def missing_how(meta: ModelMetadata, name: str) -> MissingHow:
    """What the artifact's measured ``missing_inputs`` (training.ncd_missing) says a
    missing ``name`` becomes: one value, the trees' commonest branch (never missing in
    training, no single value reproduces it), a learned route for unknown, or not
    measured (older artifacts)."""
    table = meta.extra.get("missing_inputs")
    info = table.get(name) if isinstance(table, dict) else None
    if not isinstance(info, dict):
        return "unmeasured"
    if isinstance(info.get("scored_as"), int | float):
        return "value"
    return "route" if info.get("missing_in_training") else "branch"


def missing_text(
    name: str, scored_as: float | None, unit: str, lang: str, how: MissingHow = "unmeasured"
) -> str:
    """How a missing input is shown: not recorded, and what the model scored it as.

    The value where one stands in for it; otherwise what the model did instead
    (``how``, from :func:`missing_how`), so a card without a value still says why.
    """
    if scored_as is None:
        key = {"branch": "branch", "route": "route"}.get(how, "filled")
        return t(f"card.ncd.missing.{key}", lang)
    value = value_text(name, scored_as, unit, lang)
    return t("card.ncd.missing.scored_as", lang, value=value)


def _data_used(advice: Advice, lang: str, shown: dict[str, str]) -> str:
    header = f"| {t('ui.col.name', lang)} | {t('ui.col.value', lang)} | {t('ui.col.date', lang)} |"
    rows = [header, "|---|---|---|"]
    for name in advice.features:
        when = advice.dates.get(name)
        date_text = format_date(when, lang) if when else ""
        rows.append(f"| {feature_label(name, lang)} | {shown[name]} | {date_text} |")
    units = {spec.name: spec.unit for spec in advice.metadata.features}
    for name, scored_as in advice.missing.items():
        how = missing_how(advice.metadata, name)
        text = missing_text(name, scored_as, units.get(name, "1"), lang, how)
        rows.append(f"| {feature_label(name, lang)} | **{text}** | |")
    return "\n".join(rows)


def _missing_note(advice: Advice, lang: str) -> list[str]:
    if not advice.missing:
        return []
    fields = ", ".join(feature_label(name, lang) for name in advice.missing)
    return [f"**{t('card.ncd.missing.note', lang, fields=fields)}**"]


def _summary(advice: Advice, lang: str) -> str:
    # With the WHO chart beside it, the summary names both numbers, so the model's
    # risk is never read as the chart's. "WHO chart" is the patient's printed chart
    # cell (what the explanation page outlines and a clinician reads off the paper
    # chart), not the equation at the exact values, which only the detail shows.
    cell = advice.who_cell
    if advice.outcome == "cvd" and advice.who is not None and cell is not None:
        text = t(
            "card.ncd.cvd.summary_who",
            lang,
            percent=advice.percent,
            who_percent=cell.percent,
            who_band=cell.band,
        )
    else:
        text = t(
            f"card.ncd.{advice.outcome}.summary", lang, percent=advice.percent, band=advice.band
        )
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _detail(advice: Advice, lang: str, region: str) -> str:
    meta = advice.metadata
    shown = _value_texts(advice, lang)
    factors = _factors(advice, lang, shown)
    cell = advice.who_cell
    if advice.outcome == "cvd" and advice.who is not None and cell is not None:
        body = t(
            "card.ncd.cvd.detail",
            lang,
            percent=advice.percent,
            model=meta.name,
            version=meta.version,
            region=region,
            who_percent=cell.percent,
            band=cell.band,
            cell=t(f"card.ncd.cvd.cell.{advice.who.model}", lang, **cell.model_dump()),
            exact_percent=advice.who.percent,
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
        [body, *_missing_note(advice, lang),
         f"**{t('card.ncd.data_used', lang)}**\n\n{_data_used(advice, lang, shown)}",
         f"_{t('advisory.statement', lang)}_"]
    )  # fmt: skip


def model_source(meta: ModelMetadata, lang: str, url: str | None) -> Source:
    """A card's source: the model's name and version (and its sha256 in ``topic``).

    Args:
        meta: The model that answered.
        lang: Language of the label.
        url: Where the model card can be read.
    """
    return Source(
        label=t("card.source.label", lang, model=meta.name, version=meta.version),
        url=url,
        topic=Coding(system="urn:tonle:model", code=meta.tag, display=f"sha256 {meta.sha256[:12]}"),
    )


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
        # The indicator follows the site model's own risk band (the band its FHIR
        # RiskAssessment records), not either WHO number: the WHO chart is shown beside
        # it for comparison. Where a WHO band is shown it is the chart cell's category,
        # because HEARTS reads its treatment thresholds off the printed chart's
        # categories (e.g. >= 20 %), not off the equation at exact values.
        indicator=indicators[advice.band_index],
        source=model_source(meta, lang, source_url),
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
        overrideReasons=list(_override_reasons(lang)),
        links=[Link(label=t("card.link.explanation", lang), url=explain_url, type="absolute")],
    )
