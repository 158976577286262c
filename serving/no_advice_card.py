"""The optional ``info`` card saying why an NCD service gave no risk estimate.

CDS Hooks reads ``cards: []`` as "no advice", and that stays the default: some EHRs
want no card beyond advice. A site that wants the clinician told why turns on
``no_advice_card`` (:class:`serving.config.ServingConfig`); then a :class:`NoAdvice`
that someone can fix in the chart is answered with one ``info`` card naming each
input that is missing, out of date, out of range or in an unreadable unit. The card
gives no risk, no recommendation, no suggestions and no link, and says it is not a
risk estimate. The audit row still says ``no-advice`` with the same reason code (and
the card's uuid among its card ids).

Which reason codes get a card (``<input>`` is the feature, e.g. ``sbp``):

=================================  =====  =====================================================
reason code                        card   why
=================================  =====  =====================================================
``insufficient-data:<input>``      yes    a required value was not recorded: record it
``insufficient-data:sex``          no     sex not recorded as female or male, the model's only
                                          categories: nothing to record that it could use
``stale-data:<input>``             yes    the latest value is older than ``max_data_age_days``:
                                          measure it again
``out-of-range:<input>``           yes    outside the model's valid range (implausible or
                                          mistyped): check and correct it
``out-of-range:age`` / ``:sex``    no     the patient is outside the model's population (e.g.
                                          under 40 for the WHO-range CVD model)
``unit:<input>``                   yes    recorded in a unit that cannot be converted: fix the
                                          unit
``future-dated:<input>``           yes    dated in the future (a wrong date): correct it
``already-has-outcome:diabetes``   no     the patient already has the outcome the model predicts
``model-output``                   no     internal: the model gave no valid probability
anything else, ``internal-error``  no     not the chart's to fix
=================================  =====  =====================================================

A card is given only when *every* problem found is one of the "yes" rows: a
34-year-old without a blood pressure gets ``cards: []``, not a card asking for a value
that would still give no estimate (one such card on every chart opening of every young
patient would be alert noise).
"""

from __future__ import annotations

import uuid
from typing import Final

from models.metadata import ModelMetadata
from serving.assess import NoAdvice, Problem
from serving.cards import demo_notice, feature_label, md, model_source, value_text
from serving.cds_models import SUMMARY_MAX, Card
from serving.i18n import t

__all__ = ["ACTIONABLE", "NOT_ACTIONABLE_FIELDS", "actionable", "no_advice_card"]

#: Reasons a clinician or the record's keeper can act on -> the message key part.
ACTIONABLE: Final[dict[str, str]] = {
    "insufficient-data": "missing",
    "stale-data": "stale",
    "out-of-range": "range",
    "unit": "unit",
    "future-dated": "future",
}
#: Inputs for which an otherwise actionable reason means "outside the population".
NOT_ACTIONABLE_FIELDS: Final[dict[str, frozenset[str]]] = {
    "insufficient-data": frozenset({"sex"}),
    "out-of-range": frozenset({"age", "sex"}),
}
_OUTCOMES: Final = frozenset({"cvd", "diabetes"})


def _fixable(problem: Problem) -> bool:
    return (
        problem.reason in ACTIONABLE
        and problem.field is not None
        and problem.field not in NOT_ACTIONABLE_FIELDS.get(problem.reason, frozenset())
    )


def actionable(no_advice: NoAdvice) -> bool:
    """Whether every problem behind ``no_advice`` is one the chart can fix (module table)."""
    return all(_fixable(problem) for problem in no_advice.problems)


def _value(name: str, value: float | str | None, unit: str, lang: str) -> str:
    if value is None:
        return ""
    try:
        return value_text(name, value, unit, lang)
    except (TypeError, ValueError, KeyError):  # not a number: shown as given, inert
        return md(str(value)[:40])


def _line(problem: Problem, meta: ModelMetadata, lang: str, max_age_days: int) -> str:
    name = str(problem.field)
    label = feature_label(name, lang)
    key = f"card.noadvice.ncd.line.{ACTIONABLE[problem.reason]}"
    spec = next((s for s in meta.features if s.name == name), None)
    unit = spec.unit if spec is not None else "1"
    if problem.reason in ("stale-data", "future-dated") and problem.measured is not None:
        return t(key, lang, name=label, date=problem.measured, days=max_age_days)
    if problem.reason == "future-dated":
        return t("card.noadvice.ncd.future", lang, name=label)
    if problem.reason == "out-of-range":
        low = _value(name, spec.minimum if spec else None, unit, lang)
        high = _value(name, spec.maximum if spec else None, unit, lang)
        value = _value(name, problem.value, unit, lang)
        return t(key, lang, name=label, value=value, low=low, high=high)
    if problem.reason == "unit":
        given = problem.detail.removeprefix("unit:") or "?"
        return t(key, lang, name=label, unit=md(given))  # the EHR's text: made inert
    return t("card.noadvice.ncd.line.missing", lang, name=label)


def _reason(problems: tuple[Problem, ...], lang: str, max_age_days: int) -> str:
    """The summary's reason: one problem named, or several (by name, else by count)."""
    kinds = {ACTIONABLE[p.reason] for p in problems}
    names = ", ".join(dict.fromkeys(feature_label(str(p.field), lang) for p in problems))
    if len(kinds) == 1:
        return t(f"card.noadvice.ncd.{kinds.pop()}", lang, name=names, days=max_age_days)
    return t("card.noadvice.ncd.several", lang, names=names)


def _summary(outcome: str, problems: tuple[Problem, ...], lang: str, max_age_days: int) -> str:
    key = f"card.noadvice.ncd.{outcome}.summary" if outcome in _OUTCOMES else None
    head = key or "card.noadvice.ncd.summary"
    text = t(head, lang, reason=_reason(problems, lang, max_age_days))
    if len(text) > SUMMARY_MAX:
        text = t(head, lang, reason=t("card.noadvice.ncd.count", lang, count=len(problems)))
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def no_advice_card(
    no_advice: NoAdvice,
    meta: ModelMetadata,
    *,
    lang: str,
    max_age_days: int,
    source_url: str | None = None,
) -> Card:
    """The ``info`` card saying why ``meta``'s model gave no estimate.

    Args:
        no_advice: An :func:`actionable` no-advice.
        meta: The model that would have answered.
        lang: Language of the text.
        max_age_days: The site's ``max_data_age_days`` (named for stale values).
        source_url: Where the model card can be read.

    Raises:
        ValueError: ``no_advice`` is not :func:`actionable`.
    """
    if not actionable(no_advice):
        raise ValueError(f"no card for no-advice {no_advice.code!r}: not actionable")
    problems = no_advice.problems
    outcome = meta.ncd.outcome
    intro = f"card.noadvice.ncd.{outcome}.intro" if outcome in _OUTCOMES else None
    lines = "\n".join(f"- {_line(p, meta, lang, max_age_days)}" for p in problems)
    detail = "\n\n".join(
        [
            *demo_notice(meta, lang),
            t(
                intro or "card.noadvice.ncd.intro",
                lang,
                model=md(meta.name),
                version=md(meta.version),
            ),
            lines,
            t("card.noadvice.ncd.action", lang),
            # The reason code stays in the audit row: a clinician reads the sentences above.
            f"_{t('card.noadvice.ncd.not_estimate', lang)}_",
        ]
    )
    return Card(
        uuid=str(uuid.uuid4()),
        summary=_summary(outcome, problems, lang, max_age_days),
        detail=detail,
        indicator="info",  # never more: no risk is known
        source=model_source(meta, lang, source_url),
    )
