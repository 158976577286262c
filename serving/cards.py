"""CDS Hooks cards for NCD risk advice, in the caller's language.

The guideline leads (WHO HEARTS): for cardiovascular risk the WHO chart cell the
patient falls in sets the card's indicator, summary and actions. A trained model's
estimate is a second, labelled local estimate, shown only when its recorded
validation shows it at least as good as the chart on the same patients
(:func:`serving.assess.model_validated`); when the two fall in different bands the
card says so. Diabetes-risk cards have their own severity scale
(:class:`serving.config.DiabetesScale`). Suggestions come from the site's protocol
table (:mod:`serving.protocol`), each naming the rule that fired and its source.

Every untrusted string placed in card markdown goes through :func:`md`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from functools import cache, lru_cache
from typing import Literal

from models.metadata import ModelMetadata
from models.ncd_support import Outside
from serving.assess import Advice, model_shown
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
from serving.fhir_out import follow_up_task, proposal_resource, provenance, risk_assessment
from serving.i18n import format_date, format_number, format_numbers_in, has_message, t
from serving.protocol import INDICATOR_RANK
from serving.synthetic import trained_on_synthetic

__all__ = [
    "OVERRIDE_CODES",
    "OVERRIDE_SYSTEM",
    "TB_REFERRAL",
    "Indicator",
    "Lead",
    "MissingHow",
    "by_urgency",
    "chart_place",
    "country_name",
    "demo_notice",
    "feature_label",
    "lead",
    "md",
    "missing_how",
    "missing_text",
    "model_source",
    "ncd_card",
    "override_reasons",
    "support_text",
    "value_text",
]

Indicator = Literal["info", "warning", "critical"]
OVERRIDE_SYSTEM = "https://tonle.dev/fhir/CodeSystem/override-reason"
OVERRIDE_CODES = ("not-relevant", "already-managed", "disagree", "data-wrong", "other")
Lead = Literal["chart", "model", "none"]
#: The code of a referral for a WHO-recommended rapid diagnostic test for TB (X-ray
#: cards); :func:`by_urgency` puts cards proposing it first.
TB_REFERRAL = Coding(
    system="https://tonle.dev/fhir/CodeSystem/referral",
    code="tb-rapid-test",
    display="WHO-recommended rapid diagnostic test for tuberculosis",
)
# Characters with a meaning in GitHub-flavoured markdown inline text, and the starts of
# the autolinks GFM makes from bare text ("https://...", "www.").
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#!|<>~&])")
_AUTOLINK = re.compile(r"(?i)(://|www\.)")
_DISPLAY_UNIT = {"mm[Hg]": "mmHg", "kg/m2": "kg/m²", "a": "years", "1": ""}


def md(text: object) -> str:
    """``text`` as literal characters in CDS Hooks (GitHub-flavoured) markdown.

    Markdown punctuation is backslash-escaped (links, images, emphasis, tables and
    HTML lose their meaning), as are the starts of bare-text autolinks (``://``,
    ``www.``), and line breaks become spaces. Used for
    every value a card's markdown takes from outside the code (the EHR's data, model
    metadata, the site's protocol table).
    """
    flat = " ".join(str(text).split())
    escaped = _MD_SPECIAL.sub(r"\\\1", flat)
    return _AUTOLINK.sub(lambda m: "\\:\\/\\/" if m[0] == "://" else m[0][:3] + "\\.", escaped)


@lru_cache(maxsize=1024)
def _md_fixed(text: str) -> str:
    """:func:`md` of text from the model's metadata, the WHO chart table or the protocol
    table: a bounded set of strings, escaped once each (never the EHR's data)."""
    return md(text)


def lead(advice: Advice) -> Lead:
    """Which estimate leads the card: the WHO chart when the patient is on it; else the
    local model when its validation shows it at least as good as the chart; else none
    (cardiovascular risk). A diabetes risk has no WHO chart: its model leads."""
    if advice.outcome != "cvd":
        return "model"
    if advice.who is not None and advice.who_cell is not None:
        return "chart"
    return "model" if model_shown(advice) else "none"


def support_text(
    outside: Sequence[Outside],
    features: Mapping[str, float | str],
    units: Mapping[str, str],
    lang: str,
) -> str:
    """The values outside the model's training range, e.g. "systolic BP 260 mmHg above
    the training range" (cards and the explanation page use the same words)."""
    return "; ".join(
        t(
            f"ui.explain.support.{o.side}",
            lang,
            name=feature_label(o.feature, lang),
            value=value_text(
                o.feature, features.get(o.feature, o.value), units.get(o.feature, "1"), lang
            ),
        )
        for o in outside
    )


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


def region_name(code: str | None, name: str, lang: str) -> str:
    """A WHO region's name in ``lang``; ``name`` (as recorded) where the code has none."""
    key = f"region.{code}"
    return t(key, lang) if code and has_message(key, "en") else name


def country_name(code: str, lang: str) -> str:
    """A country's name in ``lang`` (ISO alpha-3 ``code``): the catalogue's
    ``country.<code>``, else the WHO chart table's English name, else the code."""
    key = f"country.{code}"
    if has_message(key, lang):
        return t(key, lang)
    from models.who_cvd_equations import list_countries

    names = {iso: name for iso, name, _ in list_countries()}
    return names.get(code, code)


@lru_cache(maxsize=256)
def chart_place(region_code: str | None, region: str, country: str | None, lang: str) -> str:
    """Where the chart used is recalibrated to, in ``lang``: the country's name when a
    national recalibration was used (never its bare code), else the WHO region's."""
    return country_name(country, lang) if country else region_name(region_code, region, lang)


@lru_cache(maxsize=1024)
def feature_label(name: str, lang: str) -> str:
    """The feature's name in ``lang``; the field name itself where none is translated."""
    return t(f"feature.{name}", lang) if _has_feature_key(name) else name


CARD_FACTORS = 3
"""The largest factors a card names (the explanation page shows them all)."""


def _factors(advice: Advice, lang: str, shown: dict[str, str]) -> str:
    parts: list[str] = []
    for item in advice.contributions[:CARD_FACTORS]:
        sign = "+" if item.delta_risk >= 0 else "−"
        text = shown.get(item.feature) or value_text(item.feature, item.value, item.unit, lang)
        # Points in the language's digits and decimal mark, as every other number.
        points = format_number(abs(item.delta_risk) * 100.0, lang, 1)
        change = t("card.ncd.factor_points", lang, sign=sign, points=points)
        parts.append(f"{feature_label(item.feature, lang)} {text} ({change})")
    return "; ".join(parts) or "—"


@cache
def override_reasons(lang: str) -> tuple[OverrideReason, ...]:
    """The reasons a clinician may give for overriding a card, in ``lang``."""
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
    info = meta.ncd.missing_inputs.get(name)
    if info is None:
        return "unmeasured"
    if info.scored_as is not None:
        return "value"
    return "route" if info.missing_in_training else "branch"


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


@cache
def _data_head(lang: str) -> list[str]:
    names = (t("ui.col.name", lang), t("ui.col.value", lang), t("ui.col.date", lang))
    return [f"| {' | '.join(names)} |", "|---|---|---|"]


def _data_used(advice: Advice, lang: str, shown: dict[str, str]) -> str:
    rows = list(_data_head(lang))
    for name in advice.features:
        when = advice.dates.get(name)
        date_text = format_date(when, lang) if when else ""
        rows.append(f"| {feature_label(name, lang)} | {shown[name]} | {date_text} |")
    units = {spec.name: spec.unit for spec in advice.metadata.features}
    # What the model made of a missing input matters only where its estimate is shown.
    for name, scored_as in advice.missing.items() if model_shown(advice) else ():
        how = missing_how(advice.metadata, name)
        text = missing_text(name, scored_as, units.get(name, "1"), lang, how)
        rows.append(f"| {feature_label(name, lang)} | **{text}** | |")
    return "\n".join(rows)


# Either glycaemia test tells the same thing (WHO diagnostic criteria): with one on
# record, the other's absence is not worth a warning (it stays in the data table).
_EITHER_TEST = {"fasting_glucose": "hba1c", "hba1c": "fasting_glucose"}


def _missing_note(advice: Advice, lang: str) -> list[str]:
    noted = [name for name in advice.missing if _EITHER_TEST.get(name, "") not in advice.features]
    if not noted:
        return []
    fields = ", ".join(feature_label(name, lang) for name in noted)
    return [f"**{t('card.ncd.missing.note', lang, fields=fields)}**"]


def _who_reason(advice: Advice, lang: str) -> str:
    """Why the WHO chart could not be used, for a clinician."""
    kind, _, name = (advice.who_reason or "missing:").partition(":")
    key = "outside" if kind == "outside" else "missing"
    return t(f"card.ncd.who_reason.{key}", lang, name=feature_label(name, lang) if name else "")


def _fired(advice: Advice, row_id: str) -> bool:
    return any(f.row.id == row_id for f in advice.fired)


def _summary(advice: Advice, lang: str, how: Lead) -> str:
    # The WHO chart cell (what a clinician reads off the paper chart and the explanation
    # page outlines) leads; the local model's number follows only when it is validated.
    cell = advice.who_cell
    if advice.outcome == "cvd" and _fired(advice, "cvd-established"):
        text = t("card.ncd.cvd.summary_established", lang)
    elif advice.outcome == "cvd" and how == "chart" and cell is not None:
        key = "summary_chart_model" if model_shown(advice) else "summary_chart"
        text = t(
            f"card.ncd.cvd.{key}",
            lang,
            who_percent=cell.percent,
            who_band=cell.band,
            percent=advice.percent,
        )
    elif advice.outcome == "cvd" and how == "model":
        text = t("card.ncd.cvd.summary", lang, percent=advice.percent, band=advice.band)
    elif advice.outcome == "cvd":
        text = t("card.ncd.cvd.summary_none", lang, reason=_who_reason(advice, lang))
    else:
        text = t(f"card.ncd.{advice.outcome}.summary", lang, percent=advice.percent)
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _chart_text(advice: Advice, lang: str, region: str) -> str:
    cell, who = advice.who_cell, advice.who
    if cell is None or who is None:
        return t("card.ncd.cvd.chart_unavailable", lang, reason=_who_reason(advice, lang))
    return t(
        "card.ncd.cvd.chart",
        lang,
        region=_md_fixed(chart_place(who.region_code, region, who.country_code, lang)),
        who_percent=cell.percent,
        band=format_numbers_in(cell.band, lang),
        # The chart's ranges ("6-6.9") in the same digits and decimal mark as the values.
        cell=t(
            f"card.ncd.cvd.cell.{who.model}",
            lang,
            age=format_numbers_in(cell.age, lang),
            sbp=format_numbers_in(cell.sbp, lang),
            col=format_numbers_in(cell.col, lang),
        ),
        exact_percent=who.percent,
    )


def _model_text(advice: Advice, lang: str, shown: dict[str, str]) -> list[str]:
    meta = advice.metadata
    name, version = _md_fixed(meta.name), _md_fixed(meta.version)
    if advice.outside_support:
        units = {spec.name: spec.unit for spec in meta.features}
        why = support_text(advice.outside_support, advice.features, units, lang)
        return [t("card.ncd.model_outside_support", lang, reasons=why)]
    if not model_shown(advice):
        return [t("card.ncd.model_not_shown", lang, model=name, version=version)]
    factors = _factors(advice, lang, shown)
    if advice.outcome == "diabetes":
        return [
            t(
                "card.ncd.diabetes.detail",
                lang,
                percent=advice.percent,
                model=name,
                version=version,
                factors=factors,
            )
        ]
    parts = [
        t(
            "card.ncd.cvd.model",
            lang,
            percent=advice.percent,
            band=advice.band,
            model=name,
            version=version,
            factors=factors,
        )
    ]
    cell = advice.who_cell
    if cell is not None and cell.band_index != advice.band_index:
        parts.append(
            "**" + t("card.ncd.cvd.bands_differ", lang, band=advice.band, who_band=cell.band) + "**"
        )
    return parts


def _protocol_text(advice: Advice, lang: str) -> list[str]:
    protocol = advice.protocol
    if protocol is None:
        return []
    version = _md_fixed(protocol.table.version)
    if protocol.approved and protocol.approval is not None:
        head = t(
            "card.protocol.approved",
            lang,
            version=version,
            by=_md_fixed(protocol.approval.by),
            on=format_date(protocol.approval.on, lang),
        )
    else:
        head = t("card.protocol.not_approved", lang, version=version)
    lines = [
        _rule_line(
            f.row.text.get(lang), f.row.id, f"{f.row.source.document}, {f.row.source.section}", lang
        )
        for f in advice.fired
    ]
    return [f"**{head}**", "\n".join(f"- {line}" for line in lines)] if lines else [head]


@lru_cache(maxsize=1024)
def _rule_line(text: str, rule: str, source: str, lang: str) -> str:
    """A fired row as the card names it (the protocol table's words, written once)."""
    return t("card.protocol.rule", lang, text=md(text), rule=rule, source=md(source))


def demo_notice(meta: ModelMetadata, lang: str) -> list[str]:
    """The bold "demo model" line a card from a synthetic-trained model starts with."""
    return [f"**{t('advisory.demo_model', lang)}**"] if trained_on_synthetic(meta) else []


def _detail(advice: Advice, lang: str, region: str, how: Lead) -> str:
    shown = _value_texts(advice, lang)
    parts: list[str] = demo_notice(advice.metadata, lang)
    if advice.outcome == "cvd":
        parts.append(_chart_text(advice, lang, region))
    parts += _model_text(advice, lang, shown)
    if model_shown(advice):
        parts += _missing_note(advice, lang)
    parts += _protocol_text(advice, lang)
    parts.append(f"**{t('card.ncd.data_used', lang)}**\n\n{_data_used(advice, lang, shown)}")
    parts.append(f"_{t('advisory.statement', lang)}_")
    return "\n\n".join(parts)


def indicator_of(
    advice: Advice,
    how: Lead,
    indicators: Sequence[Indicator],
    diabetes_warning_percent: int,
) -> Indicator:
    """The card's indicator: the leading estimate's band on its own scale (the site's
    table for the WHO chart bands; the diabetes scale: ``info``, ``warning`` from
    ``diabetes_warning_percent``, never ``critical``), raised to the highest indicator
    of any protocol row that fired."""
    base: Indicator
    if advice.outcome == "diabetes":
        base = "warning" if advice.percent >= diabetes_warning_percent else "info"
    elif how == "chart" and advice.who_cell is not None:
        base = indicators[advice.who_cell.band_index]
    elif how == "model":
        base = indicators[advice.band_index]
    else:
        base = "info"
    raised = [f.row.indicator for f in advice.fired if f.row.indicator is not None]
    return max([base, *raised], key=INDICATOR_RANK.__getitem__)


def _label(text: str) -> str:
    return text if len(text) <= 200 else text[:199] + "…"


def _suggestions(
    advice: Advice,
    lang: str,
    assessment: dict[str, object],
    made_by: dict[str, object],
    patient_id: str,
    encounter_id: str | None,
    today: date,
    how: Lead,
) -> list[Suggestion]:
    """One suggestion per fired row that proposes something, one follow-up at the
    shortest interval any fired row sets, and recording the leading estimate (none
    when no estimate leads)."""
    out: list[Suggestion] = []
    protocol = advice.protocol
    version = protocol.table.version if protocol is not None else ""
    for fired in advice.fired:
        if not fired.proposals:
            continue
        actions = [
            Action(
                type="create",
                description=p.text.get(lang),
                resource=proposal_resource(
                    p,
                    fired.row,
                    version=version,
                    lang=lang,
                    patient_id=patient_id,
                    encounter_id=encounter_id,
                ),
            )
            for p in fired.proposals
        ]
        label = t(
            "card.protocol.suggestion", lang, text=fired.row.text.get(lang), rule=fired.row.id
        )
        out.append(Suggestion(label=_label(label), uuid=str(uuid.uuid4()), actions=actions))
    timed = [f.row for f in advice.fired if f.row.follow_up_months is not None]
    if timed:
        months = min(row.follow_up_months or 0 for row in timed)
        rules = [row for row in timed if row.follow_up_months == months]
        key = "card.protocol.follow_up_one" if months == 1 else "card.protocol.follow_up"
        label = t(key, lang, months=months, rule=", ".join(r.id for r in rules))
        task = follow_up_task(
            months,
            rules,
            version=version,
            description=label,
            patient_id=patient_id,
            today=today,
        )
        out.append(
            Suggestion(
                label=_label(label),
                uuid=str(uuid.uuid4()),
                actions=[Action(type="create", description=label, resource=task)],
            )
        )
    if how == "none":
        return out
    out.append(
        Suggestion(
            label=t("card.ncd.action.record", lang),
            uuid=str(uuid.uuid4()),
            actions=[
                Action(
                    type="create",
                    description=t("card.ncd.action.record", lang),
                    resource=assessment,
                ),
                Action(type="create", description="Provenance", resource=made_by),
            ],
        )
    )
    return out


def model_source(meta: ModelMetadata, lang: str, url: str | None) -> Source:
    """A card's source: the model's name and version (and its sha256 in ``topic``).

    Args:
        meta: The model that answered.
        lang: Language of the label.
        url: Where the model card can be read.
    """
    label = t("card.source.label", lang, model=meta.name, version=meta.version)
    if trained_on_synthetic(meta):
        label = t("card.source.demo", lang, source=label)
    return Source(
        label=label,
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
    diabetes_warning_percent: int = 20,
    today: date | None = None,
) -> Card:
    """The card for one NCD assessment.

    Args:
        advice: The assessment (with the protocol rows that fired).
        lang: Language of the text.
        indicators: Indicator for each WHO chart band index 0-4 (site configuration).
        patient_id: FHIR id of the patient (for the RiskAssessment subject).
        encounter_id: FHIR id of the encounter, if any.
        explain_url: Absolute URL of the explanation page for this card.
        region: The WHO region's name as recorded (a national recalibration is named
            by its country, in ``lang``: :func:`chart_place`).
        source_url: Where the model card can be read.
        diabetes_warning_percent: Diabetes risk from which the card is a warning.
        today: The day follow-ups are counted from (default: today).
    """
    meta = advice.metadata
    how = lead(advice)
    card_id = str(uuid.uuid4())
    assessment_id = str(uuid.uuid4())
    assessment = risk_assessment(
        advice,
        resource_id=assessment_id,
        patient_id=patient_id,
        encounter_id=encounter_id,
        lead=how,
    )
    made_by = provenance(advice, target_id=assessment_id, resource_id=str(uuid.uuid4()))
    return Card(
        uuid=card_id,
        summary=_summary(advice, lang, how),
        detail=_detail(advice, lang, region, how),
        indicator=indicator_of(advice, how, indicators, diabetes_warning_percent),
        source=model_source(meta, lang, source_url),
        suggestions=_suggestions(
            advice,
            lang,
            assessment,
            made_by,
            patient_id,
            encounter_id,
            today or datetime.now(UTC).date(),
            how,
        ),
        selectionBehavior="any",
        overrideReasons=list(override_reasons(lang)),
        links=[Link(label=t("card.link.explanation", lang), url=explain_url, type="absolute")],
    )


def _tb_referral(card: Card) -> bool:
    wanted = {"system": TB_REFERRAL.system, "code": TB_REFERRAL.code}
    for suggestion in card.suggestions:
        for action in suggestion.actions:
            resource = action.resource or {}
            codings = (resource.get("code") or {}).get("coding") or []
            if resource.get("resourceType") == "ServiceRequest" and any(
                {k: c.get(k) for k in wanted} == wanted for c in codings
            ):
                return True
    return False


def by_urgency(cards: Iterable[Card]) -> list[Card]:
    """``cards`` most urgent first: critical, warning, info; within one indicator a card
    proposing TB testing first; otherwise in the order given."""
    return sorted(cards, key=lambda c: (-INDICATOR_RANK[c.indicator], not _tb_referral(c)))
