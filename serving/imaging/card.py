"""The ``cxr-triage`` card for one stored chest X-ray read, in the caller's language.

What a clinician needs to act on a read: when the study was taken, each score on a
0-100 scale beside the threshold it was judged against, and the next step. A
TB-consistent read at or above its threshold leads, per WHO's screening guideline
(consolidated guidelines on tuberculosis, Module 2: screening, 2021: computer-aided
detection for people aged 15 and over), to a diagnostic evaluation with a
WHO-recommended rapid diagnostic test: the card proposes that referral as a
``ServiceRequest`` for patients aged 15 and over, says why not when the patient is
younger, and asks for the age when it is not known. Such a card is ``critical`` and
is shown first (:func:`serving.cards.by_urgency`). Like the NCD cards it can be
accepted or overridden with a reason.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date
from typing import Any

from serving.cards import TB_REFERRAL, md, override_reasons
from serving.cds_models import SUMMARY_MAX, Action, Card, Link, Source, Suggestion
from serving.i18n import format_date, t
from serving.imaging.results import CxrFinding, CxrResult
from serving.ui.links import LinkSigner

__all__ = ["CAD_MIN_AGE", "cxr_card", "patient_age", "score_text"]

#: WHO (2021): CAD may replace human readers for people aged 15 and over.
CAD_MIN_AGE = 15.0
_TB_SOURCE = "WHO consolidated guidelines on tuberculosis, Module 2: screening, 2021"


def patient_age(patient: object, today: date) -> float | None:
    """Whole years from a prefetched FHIR ``Patient``'s ``birthDate`` (None if unknown)."""
    birth = patient.get("birthDate") if isinstance(patient, dict) else None
    if not isinstance(birth, str) or len(birth) < 10:
        return None
    try:
        born = date.fromisoformat(birth[:10])
    except ValueError:
        return None
    if born > today:
        return None
    return float(today.year - born.year - ((today.month, today.day) < (born.month, born.day)))


def score_text(probability: float) -> str:
    """A probability on the 0-100 scale cards use ("<1" and ">99" at the ends, so a
    0.99999999995 never reads as a certain 100)."""
    score = round(probability * 100.0)
    if score == 0 and probability > 0:
        return "<1"
    if score == 100 and probability < 1:
        return ">99"
    return str(score)


def _study_day(result: CxrResult) -> date | None:
    text = result.study.study_date
    if not text or len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _score_line(finding: CxrFinding, lang: str) -> str:
    line = t(
        "card.cxr.score",
        lang,
        label=t(f"label.{finding.label}", lang),
        score=score_text(finding.probability),
        threshold=score_text(finding.threshold),
    )
    return f"**{line}** ({t('card.cxr.flagged', lang)})" if finding.flagged else line


def _summary(result: CxrResult, tb: CxrFinding | None, when: str, lang: str) -> str:
    flagged = [f for f in result.findings if f.flagged]
    if tb is not None:
        text = t(
            "card.cxr.summary.tb",
            lang,
            date=when,
            score=score_text(tb.probability),
            threshold=score_text(tb.threshold),
        )
    elif flagged:
        names = ", ".join(t(f"label.{f.label}", lang) for f in flagged)
        text = t("card.cxr.summary.abnormal_on", lang, date=when, findings=names)
        if len(text) > SUMMARY_MAX:
            text = t(
                "card.cxr.summary.abnormal_on",
                lang,
                date=when,
                findings=t("label.abnormal", lang),
            )
    else:
        text = t("card.cxr.summary.normal_on", lang, date=when)
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _referral(patient_id: str, lang: str) -> Suggestion:
    label = t("card.cxr.tb.suggestion", lang)
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "priority": "urgent",
        "code": {
            "coding": [TB_REFERRAL.model_dump(exclude_none=True)],
            "text": t("card.cxr.tb.test", lang),
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "note": [
            {"text": f"Proposed by Tonle cxr-triage after a TB-consistent read; {_TB_SOURCE}."}
        ],
    }
    return Suggestion(
        label=label,
        uuid=str(uuid.uuid4()),
        isRecommended=True,
        actions=[Action(type="create", description=label, resource=resource)],
    )


def cxr_card(
    result: CxrResult,
    *,
    public_url: str,
    signer: LinkSigner,
    lang: str = "en",
    patient_id: str | None = None,
    age: float | None = None,
    demo: bool = False,
) -> Card:
    """The card for one stored read.

    Args:
        result: The stored read.
        public_url: This service's public base URL (for the signed links).
        signer: Signs the browser links (no credentials in a clinician's browser).
        lang: Language of the text.
        patient_id: The hook's patient (subject of the proposed referral); None: no
            referral is proposed.
        age: The patient's age in years, if known (the TB referral needs >= 15).
        demo: The read's model was trained on synthetic data (:mod:`serving.synthetic`):
            the card says so first, and in its source.
    """
    base = public_url.rstrip("/")
    label = t("card.source.label", lang, model=result.model.name, version=result.model.version)
    day = _study_day(result)
    when = (
        format_date(day, lang) if day else format_date(result.created.astimezone(UTC).date(), lang)
    )
    tb = next((f for f in result.findings if f.label == "tb" and f.flagged), None)
    flagged = any(f.flagged for f in result.findings)
    dated = (
        t("card.cxr.study_date", lang, date=when)
        if day
        else t("card.cxr.analysed", lang, date=format_date(result.created, lang))
    )
    parts = [
        *([f"**{t('advisory.demo_model', lang)}**"] if demo else []),
        dated,
        t(
            "card.cxr.detail",
            lang,
            model=md(result.model.name),
            version=md(result.model.version),
            scores="; ".join(_score_line(f, lang) for f in result.findings),
            quality=t("ui.explain.cxr.quality_ok", lang),
        ),
    ]
    parts += [
        t(
            "card.cxr.threshold.site",
            lang,
            label=t(f"label.{f.label}", lang),
            source=md(f.threshold_chosen_on),
        )
        for f in result.findings
        if f.threshold_source == "site-override"
    ]
    suggestions: list[Suggestion] = []
    if tb is not None:
        if age is None:
            parts.append(f"**{t('card.cxr.tb.age_unknown', lang)}**")
        elif age < CAD_MIN_AGE:
            parts.append(f"**{t('card.cxr.tb.under_15', lang)}**")
        else:
            parts.append(f"**{t('card.cxr.tb.refer', lang, source=_TB_SOURCE)}**")
            if patient_id is not None:
                suggestions.append(_referral(patient_id, lang))
    parts.append(f"**{t('advisory.cxr', lang)}**")
    return Card(
        uuid=str(uuid.uuid4()),
        summary=_summary(result, tb, when, lang),
        detail="\n\n".join(parts),
        indicator="critical" if tb is not None else "warning" if flagged else "info",
        source=Source(label=t("card.source.demo", lang, source=label) if demo else label),
        suggestions=suggestions,
        selectionBehavior="at-most-one" if suggestions else None,
        overrideReasons=list(override_reasons(lang)),
        links=[
            Link(
                label=t("ui.explain.cxr.image", lang),
                url=f"{base}{signer.sign(result.heatmap_url)}",
                type="absolute",
            ),
            Link(
                label=t("card.link.explanation", lang),
                url=f"{base}{signer.sign(f'/ui/explain/cxr/{result.id}')}&lang={lang}",
                type="absolute",
            ),
        ],
    )
