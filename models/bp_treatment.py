"""``bp_treated``: on a blood-pressure-lowering drug at the index date, one rule for
training (FHIR Bulk export, :mod:`training.fhir_bulk`) and serving (CDS Hooks prefetch,
:mod:`serving.fhir_in`).

A ``MedicationStatement`` or ``MedicationRequest`` counts at the index date *D*
(serving: today) when all of these hold:

1. **The drug** is ATC class C02, C03, C07, C08 or C09
   (:data:`models.ncd_features.BP_LOWERING_ATC`), read from
   ``medicationCodeableConcept`` or the referenced ``Medication`` (contained, or given
   by the caller: a search Bundle's ``_include``, a Bulk ``Medication`` file).
2. **It is a record of use or an order**: never ``entered-in-error``, and a request's
   ``intent`` is not ``proposal`` or ``option``. Both facts hold for the record's whole
   life (an erroneous record never described the patient; FHIR makes a new resource
   for another intent), so they are applied whenever they were read.
3. **Its dates cover D** (FHIR R4 elements, as written, to the day):

   * it has started: its start is on or before D. Start = ``effectivePeriod.start``,
     else ``effectiveDateTime``, else ``dateAsserted`` (statement);
     ``dispenseRequest.validityPeriod.start``, else ``authoredOn`` (request). No start
     date: it cannot be placed in time and does not count;
   * it has not ended: an end (``effectivePeriod.end``, ``validityPeriod.end``)
     on or after D. A statement's ``effectivePeriod`` with a start and no end is
     *ongoing* (FHIR ``Period``), as a current medication list writes it. Anything
     else without an end counts for :data:`RECENT_DAYS` after its start: an order
     not renewed, or a use last asserted, more than a year before D is no evidence
     of treatment at D.
4. **Its status, where it is known to describe D, is** ``active``. A status
   describes the day it was read; it is known to hold at D when it was read on D
   (serving: the prefetch is read today, the index date) or when the resource has not
   changed since D (``meta.lastUpdated`` on or before D). Otherwise, which is the
   usual case in a Bulk export read years after the index date, the status is
   ignored and the dates decide.

Why 4 and not simply "status active": a Bulk export's status is the status at export
time. Someone on a drug at D who stopped it after D (perhaps *because of* the stroke
the model is to predict) is ``stopped`` in the export, someone who kept taking it is
``active``: reading those statuses would make the feature depend on what happened
after D, i.e. leak the outcome into training. A status can therefore only *remove* a
record, and only when it held at D; it never extends one beyond its dates. Serving
applies the same rule with everything read today, so a status there always counts
(the prefetch templates ask for ``status=active`` records only, which is exactly what
4 keeps: templates cannot do date arithmetic, so 3 is applied after the search).

``bp_treated`` is then 1 when any record counts, 0 when none does and the medication
data is complete (serving: both medication searches answered; training: the export
has medication files), and missing otherwise: unknown, never "untreated".

What this rule knowingly gives up: a long-standing prescription kept ``active`` for
years without renewal, an end date or a validity period counts only for
:data:`RECENT_DAYS` after it was written (training cannot tell it from a stale order);
and a record stopped before D but modified again after D counts in training while its
dates cover D (its status cannot be placed at D).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

from models.ncd_features import ATC_SYSTEM, BP_LOWERING_ATC

__all__ = [
    "MEDICATION_TYPES",
    "RECENT_DAYS",
    "MedicationUse",
    "bp_treated",
    "counts_at",
    "fhir_day",
    "in_use_at",
    "medication_use",
    "status_known_at",
]

#: How long a record without an end date is evidence of treatment, in days after its
#: start: a year covers the longest usual repeat-prescription interval (monthly to
#: quarterly refills under WHO HEARTS) and the usual validity of a prescription.
RECENT_DAYS: Final = 365
#: The resource types the rule reads.
MEDICATION_TYPES: Final[tuple[str, ...]] = ("MedicationStatement", "MedicationRequest")
_NOT_AN_ORDER: Final = frozenset({"proposal", "option"})


@dataclass(frozen=True)
class MedicationUse:
    """What the rule reads from one MedicationStatement or MedicationRequest."""

    reference: str
    """``"<Type>/<id>"`` (``"<Type>/"`` without an id), for citing the evidence."""
    status: str | None
    bp_lowering: bool
    """The drug is of a blood-pressure-lowering ATC class (rule 1)."""
    void: bool
    """``entered-in-error``, or an order intent that is no order (rule 2)."""
    start: date | None
    end: date | None
    ongoing: bool
    """A statement's open ``effectivePeriod`` (a start, no end)."""
    last_updated: date | None
    """``meta.lastUpdated``: the status has held since at least this day."""
    atc: tuple[str, ...] = ()
    """The drug's ATC codes, upper-case (other drug-class rules read these, e.g.
    :mod:`models.diabetes_status` for A10)."""


def fhir_day(value: object) -> date | None:
    """The calendar day of a FHIR date/dateTime/instant, as written (partial: None)."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _atc_codes(concept: object) -> list[str]:
    codings = _mapping(concept).get("coding")
    if not isinstance(codings, list):
        return []
    return [
        str(c.get("code") or "").upper()
        for c in codings
        if isinstance(c, Mapping) and c.get("system") == ATC_SYSTEM
    ]


def _drug(resource: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]) -> object:
    """The drug's CodeableConcept: inline, or from the referenced Medication."""
    if "medicationCodeableConcept" in resource:
        return resource["medicationCodeableConcept"]
    reference = str(_mapping(resource.get("medicationReference")).get("reference") or "")
    if reference.startswith("#"):
        contained = resource.get("contained")
        for item in contained if isinstance(contained, list) else []:
            if (
                isinstance(item, Mapping)
                and item.get("resourceType") == "Medication"
                and item.get("id") == reference[1:]
            ):
                return item.get("code")
        return None
    if reference:  # relative or absolute: the last two path segments
        return _mapping(medications.get("/".join(reference.split("/")[-2:]))).get("code")
    return None


def medication_use(
    resource: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]] | None = None
) -> MedicationUse:
    """Read one MedicationStatement or MedicationRequest (FHIR R4 JSON) for the rule.

    Args:
        resource: The resource as parsed JSON. Odd shapes read as absent elements.
        medications: Referenced Medication resources by ``"Medication/<id>"``.

    Returns:
        The elements the rule uses (see the module docstring).

    Raises:
        ValueError: ``resource`` is neither a MedicationStatement nor a MedicationRequest.
    """
    kind = resource.get("resourceType")
    if kind not in MEDICATION_TYPES:
        raise ValueError(f"resourceType {kind!r} is not one of {', '.join(MEDICATION_TYPES)}")
    status = resource.get("status")
    status = status if isinstance(status, str) else None
    codes = _atc_codes(_drug(resource, medications or {}))
    if kind == "MedicationStatement":
        period = _mapping(resource.get("effectivePeriod"))
        point = fhir_day(resource.get("effectiveDateTime")) or fhir_day(
            resource.get("dateAsserted")
        )
        void = status == "entered-in-error"
    else:
        period = _mapping(_mapping(resource.get("dispenseRequest")).get("validityPeriod"))
        point = fhir_day(resource.get("authoredOn"))
        void = status == "entered-in-error" or resource.get("intent") in _NOT_AN_ORDER
    start = fhir_day(period.get("start")) or point
    end = fhir_day(period.get("end"))
    return MedicationUse(
        reference=f"{kind}/{resource.get('id') or ''}",
        status=status,
        bp_lowering=any(code.startswith(BP_LOWERING_ATC) for code in codes),
        void=void,
        start=start,
        end=end,
        ongoing=kind == "MedicationStatement" and "start" in period and end is None,
        last_updated=fhir_day(_mapping(resource.get("meta")).get("lastUpdated")),
        atc=tuple(codes),
    )


def status_known_at(
    last_updated: date | None, index_date: date, *, status_read_on: date | None
) -> bool:
    """Whether a status read on ``status_read_on`` is known to describe ``index_date``
    (rule 4): read that day, or the resource unchanged since (``meta.lastUpdated``).

    Args:
        last_updated: The resource's ``meta.lastUpdated`` day.
        index_date: The day the feature describes.
        status_read_on: As in :func:`counts_at`.

    Returns:
        True when the status may be read as the status at ``index_date``.
    """
    if status_read_on is not None:
        if status_read_on == index_date:
            return True
        if status_read_on < index_date:  # it may have changed between reading and D
            return False
    return last_updated is not None and last_updated <= index_date


def in_use_at(use: MedicationUse, index_date: date, *, status_read_on: date | None) -> bool:
    """Rules 2-4 for any drug: a record of use or an order whose dates cover
    ``index_date`` and whose status, where known to describe that day, is active.

    Args:
        use: From :func:`medication_use`.
        index_date: The day the feature describes (serving: today).
        status_read_on: As in :func:`counts_at`.

    Returns:
        True when the record says the drug was in use at ``index_date``.
    """
    if use.void or use.start is None or use.start > index_date:
        return False
    known = status_known_at(use.last_updated, index_date, status_read_on=status_read_on)
    if known and use.status != "active":
        return False
    if use.end is not None:
        return index_date <= use.end
    return use.ongoing or index_date - use.start <= timedelta(days=RECENT_DAYS)


def counts_at(use: MedicationUse, index_date: date, *, status_read_on: date | None) -> bool:
    """Whether one record says "on a blood-pressure-lowering drug" at ``index_date``.

    Args:
        use: From :func:`medication_use`.
        index_date: The day the feature describes (serving: today).
        status_read_on: The day the status was read (serving: today); ``None`` for a
            Bulk export read some time after the index date (only ``meta.lastUpdated``
            can then place the status at the index date).

    Returns:
        True when rules 1-4 of the module docstring all hold.
    """
    return use.bp_lowering and in_use_at(use, index_date, status_read_on=status_read_on)


def bp_treated(
    uses: Iterable[MedicationUse],
    index_date: date,
    *,
    status_read_on: date | None,
    complete: bool,
) -> tuple[float | None, MedicationUse | None]:
    """The ``bp_treated`` feature at ``index_date`` and the record that shows it.

    Args:
        uses: The patient's medication records (any drug).
        index_date: The day the feature describes (serving: today).
        status_read_on: As in :func:`counts_at`.
        complete: The medication data is complete, so no record counting means
            untreated (otherwise: unknown).

    Returns:
        ``(1.0, record)`` for the first record that counts; else ``(0.0, None)`` when
        ``complete``, ``(None, None)`` when not (missing, never a default).
    """
    for use in uses:
        if counts_at(use, index_date, status_read_on=status_read_on):
            return 1.0, use
    return (0.0 if complete else None), None
