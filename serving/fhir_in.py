"""Read NCD model inputs out of CDS Hooks prefetch (FHIR R4 Patient, Observation,
Condition, MedicationStatement and MedicationRequest).

The FHIR shapes are parsed with small typed models (only the elements we use, so a
call costs microseconds, not the milliseconds full resource validation takes). Unit
conversion is delegated to :mod:`models.ncd_features`, the one conversion training
and serving share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models import bp_treatment, diabetes_status, ncd_features

__all__ = [
    "BP_LOWERING_ATC",
    "CLOCK_SKEW",
    "CVD_CONDITION_CODES",
    "DIABETES_CONDITION_CODES",
    "FHIR_ID",
    "LOINC",
    "OBSERVATION_KEYS",
    "SMOKER_CODES",
    "Extracted",
    "PrefetchError",
    "established_cvd",
    "extract",
]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"

# prefetch key -> (feature, LOINC codes accepted; a panel's component is searched too)
OBSERVATION_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sbp": ("sbp", ("8480-6", ncd_features.BP_PANEL_LOINC)),
    "dbp": ("dbp", ("8462-4", ncd_features.BP_PANEL_LOINC)),
    "totalChol": ("total_chol", ("2093-3",)),
    "hdl": ("hdl", ("2085-9",)),
    "hba1c": ("hba1c", ("4548-4",)),
    "bmi": ("bmi", ("39156-5",)),
    "smoking": ("smoking", ("72166-2",)),
    "fastingGlucose": ("fasting_glucose", ("1558-6",)),
}
# One source of truth for codes shared with training (models/ncd_features.py).
SMOKER_CODES = ncd_features.SMOKING_CURRENT_SNOMED
NON_SMOKER_CODES = ncd_features.SMOKING_NOT_CURRENT_SNOMED
DIABETES_CONDITION_CODES = ncd_features.DIABETES_CONDITION_CODES
# ATC classes only: RxNorm codes name products, and mapping them to drug classes needs
# the RxNorm/RxClass tables, which we do not ship.
BP_LOWERING_ATC = ncd_features.BP_LOWERING_ATC
_USABLE_STATUS = frozenset({"final", "amended", "corrected"})
#: A FHIR resource id (R4 ``id`` datatype). Ids go into references we write
#: (``Observation/<id>``): anything else, e.g. ``../Patient/x``, is refused.
FHIR_ID: Final = r"^[A-Za-z0-9\-.]{1,64}$"
_Id = Annotated[str, Field(pattern=FHIR_ID)]
#: How far in the future a measurement may be dated (the EHR's clock may run ahead);
#: later ones are refused (``future-dated``), never read as the freshest value.
CLOCK_SKEW: Final = timedelta(minutes=10)
#: Established cardiovascular disease (coronary, cerebrovascular or peripheral arterial
#: disease): SNOMED CT concepts (these, not their descendants) and ICD-10 categories.
CVD_CONDITION_CODES: Final[frozenset[str]] = frozenset({
    "22298006",  # Myocardial infarction
    "399211009",  # History of myocardial infarction
    "414545008",  # Ischemic heart disease
    "53741008",  # Coronary arteriosclerosis
    "194828000",  # Angina
    "230690007",  # Cerebrovascular accident
    "266257000",  # Transient ischemic attack
    "62914000",  # Cerebrovascular disease
    "840580004",  # Peripheral arterial disease
    "399957001",  # Peripheral arterial occlusive disease
    "400047006",  # Peripheral vascular disease
})  # fmt: skip
_ICD10_CVD: Final = ("I20", "I21", "I22", "I23", "I24", "I25", "I6", "G45", "I70", "I739")
# prefetch key -> resource type of medication lists (bp_treated and diabetes read them)
MEDICATION_KEYS = {
    "medicationStatements": "MedicationStatement",
    "medicationRequests": "MedicationRequest",
}


class PrefetchError(ValueError):
    """A prefetch value is not the FHIR shape its key asks for (answered 400)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"prefetch.{key}: {message}")
        self.key = key


class _F(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Coding(_F):
    system: str | None = None
    code: str | None = None


class _Concept(_F):
    coding: list[_Coding] = []


class _Quantity(_F):
    value: float | None = None
    unit: str | None = None
    code: str | None = None
    system: str | None = None


class _Component(_F):
    code: _Concept
    valueQuantity: _Quantity | None = None


class _Period(_F):
    start: str | None = None


class _MedicationPeriod(_Period):
    end: str | None = None


class _Observation(_F):
    resourceType: str
    id: _Id | None = None
    status: str
    code: _Concept
    effectiveDateTime: str | None = None
    effectivePeriod: _Period | None = None
    issued: str | None = None
    valueQuantity: _Quantity | None = None
    valueCodeableConcept: _Concept | None = None
    component: list[_Component] = []


class _Condition(_F):
    """A Condition: the shape checked before :func:`models.diabetes_status.diagnosis`
    reads it."""

    resourceType: str
    id: _Id | None = None
    code: _Concept | None = None
    clinicalStatus: _Concept | None = None
    verificationStatus: _Concept | None = None
    onsetDateTime: str | None = None
    onsetPeriod: _MedicationPeriod | None = None
    recordedDate: str | None = None
    abatementDateTime: str | None = None
    abatementPeriod: _MedicationPeriod | None = None


class _Reference(_F):
    reference: str | None = None


class _MedicationUse(_F):
    """A MedicationStatement or MedicationRequest: the shape checked before
    :func:`models.bp_treatment.medication_use` reads it."""

    resourceType: str
    id: _Id | None = None
    status: str
    intent: str | None = None
    medicationCodeableConcept: _Concept | None = None
    medicationReference: _Reference | None = None
    contained: list[dict[str, Any]] = []
    effectiveDateTime: str | None = None
    effectivePeriod: _MedicationPeriod | None = None
    dateAsserted: str | None = None
    authoredOn: str | None = None


class _Medication(_F):
    resourceType: str
    id: _Id | None = None
    code: _Concept | None = None


class _Patient(_F):
    resourceType: str
    id: _Id | None = None
    gender: str | None = None
    birthDate: str | None = None


@dataclass
class Extracted:
    """Features found in the prefetch, with the date and source of each."""

    values: dict[str, float | str] = field(default_factory=dict)
    dates: dict[str, date] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # feature -> "Observation/id"
    # feature -> ``unit:<unit>`` or ``future-dated:<date>``
    problems: dict[str, str] = field(default_factory=dict)
    # outcome -> the resource showing the patient already had it (diagnosed on or before
    # today, even if resolved since): not at risk of a new onset.
    prior: dict[str, str] = field(default_factory=dict)
    # What the Conditions on record say, whatever their dates: ``established_cvd`` and
    # ``diabetes_diagnosed`` -> True (a Condition shows it), False (the search was read
    # in full and none does) or None (not known). The protocol rules read them.
    history: dict[str, bool | None] = field(default_factory=dict)


def _resources(key: str, value: dict[str, Any] | None, resource_type: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    kind = value.get("resourceType")
    if kind == resource_type:
        return [value]
    if kind != "Bundle":
        raise PrefetchError(key, f"expected a {resource_type} or a Bundle, got {kind!r}")
    entries = value.get("entry") or []
    if not isinstance(entries, list):
        raise PrefetchError(key, "Bundle.entry must be a list")
    found: list[dict[str, Any]] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == resource_type:
            found.append(resource)
    return found


def _parse_moment(key: str, text: str | None) -> datetime | None:
    """A FHIR date or dateTime as a UTC moment (a date: its first instant); None when
    absent or unreadable.

    Raises:
        PrefetchError: a date that cannot be placed on the UTC calendar (e.g. year 9999
            with a negative offset).
    """
    if not text:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except ValueError:
        return None
    except OverflowError as exc:
        raise PrefetchError(key, f"date {text[:40]!r} is outside the calendar") from exc


def _parse_date(text: str | None, key: str = "patient") -> date | None:
    moment = _parse_moment(key, text)
    return moment.date() if moment is not None else None


def _has_code(concept: _Concept | None, codes: tuple[str, ...] | frozenset[str]) -> str | None:
    if concept is None:
        return None
    for coding in concept.coding:
        if coding.code in codes and (coding.system in (None, LOINC, SNOMED)):
            return coding.code
    return None


def _observation_value(obs: _Observation, code: str, feature: str) -> _Quantity | None:
    if code == ncd_features.BP_PANEL_LOINC:  # the panel's component for this feature
        wanted = (str(ncd_features.FEATURE_BY_NAME[feature].loinc),)
        for component in obs.component:
            if _has_code(component.code, wanted):
                return component.valueQuantity
        return None
    return obs.valueQuantity


def _latest_observation(
    key: str, raw: list[dict[str, Any]], codes: tuple[str, ...], now: datetime
) -> tuple[_Observation, str, date] | date | None:
    """The latest usable Observation, its code and date; or the date of one dated
    beyond ``now`` plus :data:`CLOCK_SKEW` (refused: a wrong date must not win as the
    freshest value); or None."""
    best: tuple[_Observation, str, date] | None = None
    for item in raw:
        try:
            obs = _Observation.model_validate(item)
        except ValidationError as exc:
            raise PrefetchError(key, f"Observation is malformed: {exc.errors()[0]['msg']}") from exc
        code = _has_code(obs.code, codes)
        if code is None or obs.status not in _USABLE_STATUS:
            continue
        moment = _parse_moment(
            key,
            obs.effectiveDateTime or (obs.effectivePeriod.start if obs.effectivePeriod else None),
        ) or _parse_moment(key, obs.issued)
        if moment is None:
            continue
        if moment > now + CLOCK_SKEW:
            return moment.date()
        when = moment.date()
        if best is None or when > best[2]:
            best = (obs, code, when)
    return best


def _smoking(obs: _Observation) -> float | None:
    if _has_code(obs.valueCodeableConcept, SMOKER_CODES):
        return 1.0
    if _has_code(obs.valueCodeableConcept, NON_SMOKER_CODES):
        return 0.0
    return None


def _age(birth: date, today: date) -> float:
    years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    return float(years)


def extract(
    prefetch: dict[str, dict[str, Any] | None], today: date, now: datetime | None = None
) -> Extracted:
    """Map prefetch resources to feature values in model units, with dates and sources.

    Values that are absent or unusable are simply not in ``values``; the caller decides
    (insufficient data means no advice, never a default). A value whose unit cannot
    be converted is recorded in ``problems`` as ``unit:<unit>``; a measurement dated
    in the future (beyond :data:`CLOCK_SKEW`) as ``future-dated:<date>``.

    Args:
        prefetch: The CDS Hooks prefetch, completed.
        today: The index date.
        now: The current moment (default: now, when ``today`` is today; else the end
            of ``today``).

    Raises:
        PrefetchError: a prefetch value is not the FHIR shape its key asks for (an id
            that is not a FHIR id, a date outside the calendar, ...).
    """
    if now is None:
        current = datetime.now(UTC)
        now = current if current.date() == today else datetime.combine(today, time.max, UTC)
    out = Extracted()
    patients = _resources("patient", prefetch.get("patient"), "Patient")
    if patients:
        try:
            patient = _Patient.model_validate(patients[0])
        except ValidationError as exc:
            raise PrefetchError("patient", "Patient is malformed") from exc
        if patient.gender in ("female", "male"):
            out.values["sex"] = patient.gender
            out.units["sex"] = "1"
        birth = _parse_date(patient.birthDate) if patient.birthDate else None
        if birth is not None and birth <= today:
            out.values["age"] = _age(birth, today)
            out.units["age"] = "a"
            out.dates["age"] = today
    for key, (feature, codes) in OBSERVATION_KEYS.items():
        latest = _latest_observation(
            key, _resources(key, prefetch.get(key), "Observation"), codes, now
        )
        if latest is None:
            continue
        if isinstance(latest, date):
            out.problems[feature] = f"future-dated:{latest.isoformat()}"
            continue
        obs, code, when = latest
        if feature == "smoking":
            value: float | None = _smoking(obs)
            unit = "1"
        else:
            quantity = _observation_value(obs, code, feature)
            if quantity is None or quantity.value is None or not math.isfinite(quantity.value):
                continue
            unit = quantity.code or quantity.unit or ""
            try:
                value = ncd_features.convert(feature, quantity.value, unit)
            except ncd_features.UnitError:
                out.problems[feature] = f"unit:{unit[:20]}"
                continue
        if value is None:
            continue
        out.values[feature] = value
        out.units[feature] = unit if feature == "smoking" else ncd_features.CANONICAL_UNITS[feature]
        out.dates[feature] = when
        if obs.id:
            out.sources[feature] = f"Observation/{obs.id}"
    uses, medications_complete = _medication_uses(prefetch)
    _diabetes(prefetch, out, today, uses, medications_complete)
    _bp_treated(out, today, uses, medications_complete)
    return out


def _complete(prefetch: dict[str, dict[str, Any] | None], key: str) -> bool:
    """The search was answered in full: given, and not a Bundle with a further page."""
    value = prefetch.get(key)
    if value is None:
        return False
    links = value.get("link") if value.get("resourceType") == "Bundle" else None
    return not any(
        isinstance(link, dict) and link.get("relation") == "next"
        for link in (links if isinstance(links, list) else [])
    )


def _medication_uses(
    prefetch: dict[str, dict[str, Any] | None],
) -> tuple[list[bp_treatment.MedicationUse], bool]:
    """Every MedicationStatement and MedicationRequest in the prefetch, read for the
    shared rules, and whether both searches were answered in full."""
    uses: list[bp_treatment.MedicationUse] = []
    for key, kind in MEDICATION_KEYS.items():
        medications: dict[str, dict[str, Any]] = {}
        for raw in _resources(key, prefetch.get(key), "Medication"):
            try:
                medication = _Medication.model_validate(raw)
            except ValidationError as exc:
                raise PrefetchError(key, "Medication is malformed") from exc
            medications[f"Medication/{medication.id}"] = raw
        for raw in _resources(key, prefetch.get(key), kind):
            try:
                _MedicationUse.model_validate(raw)
            except ValidationError as exc:
                raise PrefetchError(key, f"{kind} is malformed") from exc
            uses.append(bp_treatment.medication_use(raw, medications))
    return uses, all(_complete(prefetch, key) for key in MEDICATION_KEYS)


def _diabetes(
    prefetch: dict[str, dict[str, Any] | None],
    out: Extracted,
    today: date,
    uses: list[bp_treatment.MedicationUse],
    medications_complete: bool,
) -> None:
    """Diabetes today, by :func:`models.diabetes_status.has_diabetes` (the rule training
    uses at its index date, and the one ``already-has-outcome`` reads): a diabetes
    Condition, a drug used in diabetes, or the latest HbA1c / fasting glucose.

    0 only when the Condition search and both medication searches were answered in
    full; otherwise only evidence gives a value (unknown, not "no"). The date is kept
    for a laboratory result (its age is checked like any measurement).
    """
    diagnoses: list[diabetes_status.Diagnosis] = []
    cvd = False
    for raw in _resources("diabetes", prefetch.get("diabetes"), "Condition"):
        try:
            _Condition.model_validate(raw)
        except ValidationError as exc:
            raise PrefetchError("diabetes", "Condition is malformed") from exc
        dx = diabetes_status.diagnosis(raw)
        diagnoses.append(dx)
        cvd = cvd or (not dx.void and established_cvd(raw))
    conditions_read = _complete(prefetch, "diabetes")
    on_record = any(dx.diabetes and not dx.void for dx in diagnoses)
    out.history["established_cvd"] = True if cvd else (False if conditions_read else None)
    out.history["diabetes_diagnosed"] = True if on_record else (False if conditions_read else None)
    labs = [
        diabetes_status.LabResult(lab, value, out.dates[lab], out.sources.get(lab, ""))
        for lab in diabetes_status.LAB_CUTS
        if isinstance(value := out.values.get(lab), float) and lab in out.dates
    ]
    complete = _complete(prefetch, "diabetes") and medications_complete
    finding = diabetes_status.has_diabetes(
        diagnoses, uses, labs, today, status_read_on=today, complete=complete
    )
    if finding.value is None:
        return
    out.values["diabetes"] = finding.value
    out.units["diabetes"] = "1"
    if finding.reference:
        out.sources["diabetes"] = finding.reference
    if finding.day is not None:
        out.dates["diabetes"] = finding.day
    diagnosed = diabetes_status.diagnosed_by(diagnoses, today)
    if diagnosed is not None:
        out.prior["diabetes"] = diagnosed.reference


def established_cvd(condition: dict[str, Any]) -> bool:
    """Whether a Condition is coded as established cardiovascular disease
    (:data:`CVD_CONDITION_CODES`, or ICD-10 I20-I25, I60-I69, G45, I70, I73.9)."""
    concept = condition.get("code")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings if isinstance(codings, list) else []:
        if not isinstance(coding, dict):
            continue
        system, code = str(coding.get("system") or ""), str(coding.get("code") or "")
        if system == SNOMED and code in CVD_CONDITION_CODES:
            return True
        icd = code.upper().replace(".", "")
        if system.startswith(diabetes_status.ICD10_SYSTEM_PREFIX) and icd.startswith(_ICD10_CVD):
            return True
    return False


def _bp_treated(
    out: Extracted,
    today: date,
    uses: list[bp_treatment.MedicationUse],
    medications_complete: bool,
) -> None:
    """On a blood-pressure-lowering drug today, by :func:`models.bp_treatment.bp_treated`
    (the rule training uses at its index date; see that module for what counts and why).

    Both medication searches answered in full means complete data (0 when nothing
    counts); otherwise only a record that counts gives a value. Statuses are read
    today, so they always apply. No date is kept: the rule has already judged the
    record's dates.
    """
    value, evidence = bp_treatment.bp_treated(
        uses, today, status_read_on=today, complete=medications_complete
    )
    if value is None:
        return
    out.values["bp_treated"] = value
    out.units["bp_treated"] = "1"
    if evidence is not None and not evidence.reference.endswith("/"):
        out.sources["bp_treated"] = evidence.reference
