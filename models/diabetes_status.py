"""``diabetes``: diabetes at the index date, one rule for training (FHIR Bulk export,
:mod:`training.fhir_bulk`) and serving (CDS Hooks prefetch, :mod:`serving.fhir_in`),
and the rule by which the diabetes-risk service finds a patient who already has the
outcome (``already-has-outcome``).

A patient has diabetes at the index date *D* (serving: today) when any of these says
so:

1. **A diagnosis**: a ``Condition`` coded as diabetes mellitus, SNOMED CT
   (:data:`models.ncd_features.DIABETES_CONDITION_CODES`) or ICD-10 E10-E14 (any
   ``http://hl7.org/fhir/sid/icd-10*`` system: WHO, -CM and national modifications
   keep E10-E14), which

   * is not ``refuted`` or ``entered-in-error`` (``verificationStatus``): such a record
     never described the patient, so this applies whenever it was read, as
     :mod:`models.bp_treatment` does for ``entered-in-error``;
   * has started: ``onsetDateTime``, else ``onsetPeriod.start``, else ``recordedDate``
     on or before D. A Condition without any of these counts only where its clinical
     status is known to describe D (below) and is active: that is then a statement
     about D itself;
   * has not abated before D (``abatementDateTime``, else ``abatementPeriod.end``);
   * where its ``clinicalStatus`` is known to describe D, is ``active``,
     ``recurrence`` or ``relapse`` (not ``inactive``, ``remission``, ``resolved``).
     Known to describe D exactly as in :func:`models.bp_treatment.status_known_at`:
     read on D (serving), or ``meta.lastUpdated`` on or before D. A Bulk export's
     status is the status at export time; reading it would let what happened after D
     (a diagnosis resolved because of treatment started after D) decide the feature,
     so there the dates decide. A Condition without a ``clinicalStatus`` (an encounter
     diagnosis may have none) is judged by its dates.

2. **A drug used in diabetes** (ATC A10,
   :data:`models.ncd_features.GLUCOSE_LOWERING_ATC`: insulins, metformin,
   sulfonylureas, ...) in use at D, by the same rules 2-4 as ``bp_treated``
   (:func:`models.bp_treatment.in_use_at`: not void, dates cover D, an order counts
   for :data:`models.bp_treatment.RECENT_DAYS` after it was written, status where
   known to describe D is active).

3. **A laboratory result** (docs/standards.md): the latest HbA1c >= 6.5 % or the latest
   fasting plasma glucose >= 7.0 mmol/L (126 mg/dL, :data:`LAB_CUTS`), dated on or
   before D and no more than :data:`LAB_LOOKBACK_DAYS` before it. Both paths see the
   same latest value: training takes the latest within its look-back (730 days by
   default, the same window), serving the latest Observation the prefetch returns.

``diabetes`` is then 1 when any of these counts; 0 when none does *and* the record
can tell, i.e. the diagnoses and the medications are both complete (serving: the
Condition search and both medication searches answered, no further page; training:
the export has Condition and medication files, or the caller says the diagnoses are
complete); missing otherwise. A normal HbA1c alone is not "no diabetes": treated
diabetes often has one, and without the diagnoses and drugs the record cannot tell.

**Already has the outcome.** The diabetes-risk model predicts *new-onset* diabetes.
Someone with diabetes at D by the rule above is not at risk of it, and neither is
someone diagnosed with diabetes on or before D whose diabetes has since resolved,
abated or gone into remission (a later diagnosis would be a relapse, not an onset):
:func:`diagnosed_by` finds them. Training leaves both out of the diabetes-risk cohort
(``exclude_prevalent_diabetes``, and no outcome for those :func:`diagnosed_by` finds);
serving refuses both (``already-has-outcome``).

What this rule knowingly gives up: a diagnosis refuted after D counts in serving on D
but not in training (an erroneous record is void for its whole life); a single raised
laboratory value is taken as diabetes without the confirmatory second test WHO asks
for (the record rarely shows whether the patient was fasting or symptomatic).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

from models.bp_treatment import MedicationUse, fhir_day, in_use_at, status_known_at
from models.ncd_features import (
    DIABETES_CONDITION_CODES,
    GLUCOSE_LOWERING_ATC,
    convert,
    icd10_is_diabetes,
)

__all__ = [
    "ACTIVE_CLINICAL_STATUS",
    "LAB_CUTS",
    "LAB_LOOKBACK_DAYS",
    "Diagnosis",
    "Finding",
    "LabResult",
    "diagnosed_by",
    "diagnosis",
    "diagnosis_counts_at",
    "drug_counts_at",
    "has_diabetes",
    "lab_counts_at",
]

SNOMED_SYSTEM: Final = "http://snomed.info/sct"
#: Prefix of the ICD-10 systems (WHO ``.../icd-10``, ``.../icd-10-cm``, national ones).
ICD10_SYSTEM_PREFIX: Final = "http://hl7.org/fhir/sid/icd-10"
#: Clinical statuses that mean the condition is present (``recurrence`` and ``relapse``
#: are kinds of ``active`` in the FHIR R4 condition-clinical hierarchy).
ACTIVE_CLINICAL_STATUS: Final = frozenset({"active", "recurrence", "relapse"})
_VOID_VERIFICATION: Final = frozenset({"refuted", "entered-in-error"})
#: Diagnostic cut-offs (docs/standards.md, WHO): HbA1c 6.5 % (NGSP; 48 mmol/mol IFCC converts
#: to 6.54 %), fasting glucose 7.0 mmol/L = 126 mg/dL. 126 mg/dL converts to 6.994
#: mmol/L (:func:`models.ncd_features.convert`), so that is the cut: a result at the
#: published cut-off counts in either unit.
LAB_CUTS: Final[dict[str, float]] = {
    "hba1c": 6.5,
    "fasting_glucose": min(7.0, convert("fasting_glucose", 126.0, "mg/dL")),
}
#: How old the latest result may be at the index date, in days: training's default
#: look-back, so a result training cannot see is not read in serving either.
LAB_LOOKBACK_DAYS: Final = 730


@dataclass(frozen=True)
class Diagnosis:
    """What the rule reads from one Condition."""

    reference: str
    """``"Condition/<id>"`` (``"Condition/"`` without an id), for citing the evidence."""
    diabetes: bool
    """Coded as diabetes mellitus (SNOMED CT or ICD-10 E10-E14)."""
    void: bool
    """``verificationStatus`` refuted or entered-in-error."""
    start: date | None
    end: date | None
    """The day it abated, if it did."""
    status: str | None
    """The ``clinicalStatus`` code, if any."""
    last_updated: date | None


@dataclass(frozen=True)
class LabResult:
    """The latest result of one laboratory test (``hba1c`` or ``fasting_glucose``)."""

    feature: str
    value: float
    """In the feature's canonical unit (% or mmol/L)."""
    day: date
    reference: str = ""


@dataclass(frozen=True)
class Finding:
    """The ``diabetes`` feature and what shows it."""

    value: float | None
    """1.0, 0.0, or None (unknown)."""
    reference: str = ""
    """The resource that shows diabetes (empty when none, or it has no id)."""
    day: date | None = None
    """The date of a laboratory result that shows it (a diagnosis or a drug has none:
    the rule has judged its dates)."""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _codes(concept: object) -> list[tuple[str, str]]:
    codings = _mapping(concept).get("coding")
    if not isinstance(codings, list):
        return []
    return [
        (str(c.get("system") or ""), str(c.get("code") or ""))
        for c in codings
        if isinstance(c, Mapping)
    ]


def _is_diabetes(system: str, code: str) -> bool:
    if system == SNOMED_SYSTEM:
        return code in DIABETES_CONDITION_CODES
    return system.startswith(ICD10_SYSTEM_PREFIX) and icd10_is_diabetes(code)


def diagnosis(resource: Mapping[str, Any]) -> Diagnosis:
    """Read one Condition (FHIR R4 JSON) for the rule.

    Args:
        resource: The resource as parsed JSON. Odd shapes read as absent elements.

    Returns:
        The elements the rule uses (see the module docstring).

    Raises:
        ValueError: ``resource`` is not a Condition.
    """
    kind = resource.get("resourceType")
    if kind != "Condition":
        raise ValueError(f"resourceType {kind!r} is not Condition")
    statuses = [code for _, code in _codes(resource.get("clinicalStatus")) if code]
    return Diagnosis(
        reference=f"Condition/{resource.get('id') or ''}",
        diabetes=any(_is_diabetes(s, c) for s, c in _codes(resource.get("code"))),
        void=any(c in _VOID_VERIFICATION for _, c in _codes(resource.get("verificationStatus"))),
        start=fhir_day(resource.get("onsetDateTime"))
        or fhir_day(_mapping(resource.get("onsetPeriod")).get("start"))
        or fhir_day(resource.get("recordedDate")),
        end=fhir_day(resource.get("abatementDateTime"))
        or fhir_day(_mapping(resource.get("abatementPeriod")).get("end")),
        status=statuses[0] if statuses else None,
        last_updated=fhir_day(_mapping(resource.get("meta")).get("lastUpdated")),
    )


def diagnosis_counts_at(dx: Diagnosis, index_date: date, *, status_read_on: date | None) -> bool:
    """Whether one Condition says "diabetes" at ``index_date`` (rule 1).

    Args:
        dx: From :func:`diagnosis`.
        index_date: The day the feature describes (serving: today).
        status_read_on: The day the status was read (serving: today); ``None`` for a
            Bulk export read after the index date.

    Returns:
        True when the diagnosis counts.
    """
    if not dx.diabetes or dx.void:
        return False
    known = dx.status is not None and status_known_at(
        dx.last_updated, index_date, status_read_on=status_read_on
    )
    if known and dx.status not in ACTIVE_CLINICAL_STATUS:
        return False
    if dx.start is None:
        return known  # active, and known to be so on the index date
    if dx.start > index_date:
        return False
    return dx.end is None or index_date <= dx.end


def diagnosed_by(diagnoses: Iterable[Diagnosis], index_date: date) -> Diagnosis | None:
    """A diabetes diagnosis dated on or before ``index_date``, whatever its clinical
    status or abatement: the patient is not at risk of *new-onset* diabetes.

    Args:
        diagnoses: The patient's Conditions (any code).
        index_date: The day the prediction is made for (serving: today).

    Returns:
        The first such diagnosis (not refuted or entered-in-error), else None.
    """
    for dx in diagnoses:
        if dx.diabetes and not dx.void and dx.start is not None and dx.start <= index_date:
            return dx
    return None


def drug_counts_at(use: MedicationUse, index_date: date, *, status_read_on: date | None) -> bool:
    """Whether one medication record says "on a drug used in diabetes" at ``index_date``
    (rule 2; arguments as in :func:`models.bp_treatment.counts_at`).

    Returns:
        True when an ATC A10 drug is in use at ``index_date``.
    """
    glucose_lowering = any(code.startswith(GLUCOSE_LOWERING_ATC) for code in use.atc)
    return glucose_lowering and in_use_at(use, index_date, status_read_on=status_read_on)


def lab_counts_at(lab: LabResult, index_date: date) -> bool:
    """Whether the latest result of a test shows diabetes at ``index_date`` (rule 3).

    Raises:
        KeyError: ``lab.feature`` is not one of :data:`LAB_CUTS`.
    """
    cut = LAB_CUTS[lab.feature]
    recent = index_date - timedelta(days=LAB_LOOKBACK_DAYS) <= lab.day <= index_date
    return recent and lab.value >= cut


def has_diabetes(
    diagnoses: Iterable[Diagnosis],
    uses: Iterable[MedicationUse],
    labs: Iterable[LabResult],
    index_date: date,
    *,
    status_read_on: date | None,
    complete: bool,
) -> Finding:
    """The ``diabetes`` feature at ``index_date`` and the record that shows it.

    Args:
        diagnoses: The patient's Conditions (any code).
        uses: The patient's medication records (any drug).
        labs: The latest HbA1c and fasting glucose, where measured.
        index_date: The day the feature describes (serving: today).
        status_read_on: As in :func:`diagnosis_counts_at`.
        complete: The diagnoses and medications are complete, so nothing counting
            means "no diabetes" (otherwise: unknown).

    Returns:
        ``Finding(1.0, ...)`` for the first diagnosis, drug or result that counts (in
        that order); else ``Finding(0.0)`` when ``complete``, ``Finding(None)`` when not.
    """
    for dx in diagnoses:
        if diagnosis_counts_at(dx, index_date, status_read_on=status_read_on):
            return Finding(1.0, dx.reference if not dx.reference.endswith("/") else "")
    for use in uses:
        if drug_counts_at(use, index_date, status_read_on=status_read_on):
            return Finding(1.0, use.reference if not use.reference.endswith("/") else "")
    for lab in labs:
        if lab_counts_at(lab, index_date):
            return Finding(1.0, lab.reference, lab.day)
    return Finding(0.0 if complete else None)
