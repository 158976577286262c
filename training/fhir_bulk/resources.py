"""Per-resource extraction: Patient, Observation, Condition and drug records to rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.bp_treatment import MedicationUse, medication_use
from models.ncd_features import (
    BP_PANEL_LOINC,
    CVD_CONDITION_CODES,
    DIABETES_CONDITION_CODES,
    FEATURE_BY_NAME,
    GLUCOSE_LOWERING_ATC,
    LOINC_TO_FEATURE,
    SMOKING_CURRENT_SNOMED,
    SMOKING_LOINC,
    SMOKING_NOT_CURRENT_SNOMED,
    UnitError,
    convert,
    icd10_is_cvd,
    icd10_is_diabetes,
)
from training.fhir_bulk.ndjson import codes_of, fhir_day, iter_ndjson, ref_id
from training.fhir_bulk.report import IssueCollector

__all__ = [
    "condition_kind",
    "drug_use",
    "observation_rows",
    "read_patients",
    "to_days",
]

_FEATURE_LOINC = frozenset(LOINC_TO_FEATURE)
_KNOWN_LOINC = _FEATURE_LOINC | {SMOKING_LOINC, BP_PANEL_LOINC}

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm")


def to_days(values: pd.Series) -> pd.Series:
    """ISO day strings -> datetime64 (an impossible calendar day becomes NaT)."""
    return pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")


def _obs_date(res: dict[str, Any]) -> str | None:
    return (
        fhir_day(res.get("effectiveDateTime"))
        or fhir_day((res.get("effectivePeriod") or {}).get("start"))
        or fhir_day(res.get("issued"))
    )


def _quantity(
    feature: str, vq: dict[str, Any] | None, pid: str, issues: IssueCollector, when: str
) -> float | None:
    if not vq or "value" not in vq:
        issues.add(pid, feature, "observation without valueQuantity.value", date=when)
        return None
    unit = str(vq.get("code") or vq.get("unit") or "")
    try:
        value = convert(feature, float(vq["value"]), unit)
    except UnitError as exc:
        rule = f"unit not accepted (allowed: {', '.join(exc.allowed)})"
        issues.add(pid, feature, rule, unit, date=when)
        return None
    except (TypeError, ValueError):
        issues.add(pid, feature, "value is not a number", vq.get("value"), date=when)
        return None
    spec = FEATURE_BY_NAME[feature]
    assert spec.minimum is not None
    assert spec.maximum is not None
    if not np.isfinite(value) or not spec.minimum <= value <= spec.maximum:
        issues.add(
            pid,
            feature,
            f"impossible value: must be {spec.minimum:g}-{spec.maximum:g} {spec.unit}",
            f"{vq['value']} {unit}",
            date=when,
        )
        return None
    return value


def observation_rows(
    res: dict[str, Any], issues: IssueCollector, rows: list[tuple[str, str, str, float]]
) -> tuple[str | None, str | None]:
    """Append the feature values of one Observation to ``rows``; return (patient, day)."""
    pid = ref_id(res.get("subject"))
    when = _obs_date(res)
    if pid is None or res.get("status") in ("entered-in-error", "cancelled"):
        return pid, None
    codes = {code for system, code in codes_of(res.get("code")) if system == LOINC}
    if when is None:
        if codes & _KNOWN_LOINC:
            issues.add(pid, "effective", "observation without a date")
        return pid, None
    if SMOKING_LOINC in codes:
        answer = {c for s, c in codes_of(res.get("valueCodeableConcept")) if s == SNOMED}
        if answer & SMOKING_CURRENT_SNOMED:
            rows.append((pid, "smoking", when, 1.0))
        elif answer & SMOKING_NOT_CURRENT_SNOMED:
            rows.append((pid, "smoking", when, 0.0))
        return pid, when
    for code in codes:
        feature = LOINC_TO_FEATURE.get(code)
        if feature is not None:
            value = _quantity(feature, res.get("valueQuantity"), pid, issues, when)
            if value is not None:
                rows.append((pid, feature, when, value))
    if BP_PANEL_LOINC in codes or not codes & _FEATURE_LOINC:
        for comp in res.get("component", ()):
            for system, code in codes_of(comp.get("code")):
                feature = LOINC_TO_FEATURE.get(code)
                if system == LOINC and feature in ("sbp", "dbp"):
                    value = _quantity(feature, comp.get("valueQuantity"), pid, issues, when)
                    if value is not None:
                        rows.append((pid, feature, when, value))
    return pid, when


def condition_kind(res: dict[str, Any]) -> str | None:
    """``"cvd"`` (MI or stroke), ``"diabetes"`` or None, from a Condition's codes."""
    for system, code in codes_of(res.get("code")):
        if system == SNOMED and code in CVD_CONDITION_CODES:
            return "cvd"
        if system == SNOMED and code in DIABETES_CONDITION_CODES:
            return "diabetes"
        if system in ICD10 and icd10_is_cvd(code):
            return "cvd"
        if system in ICD10 and icd10_is_diabetes(code):
            return "diabetes"
    return None


def drug_use(
    res: dict[str, Any],
    pid: str | None,
    medications: dict[str, dict[str, Any]],
    issues: IssueCollector,
    uses: dict[str, list[MedicationUse]],
) -> None:
    """Keep a blood-pressure or glucose-lowering drug record for the shared rules
    (:func:`models.bp_treatment.bp_treated`, :func:`models.diabetes_status.has_diabetes`).
    """
    if pid is None:
        return
    use = medication_use(res, medications)
    glucose = any(code.startswith(GLUCOSE_LOWERING_ATC) for code in use.atc)
    if not (use.bp_lowering or glucose) or use.void:
        return
    if use.start is None:
        field = "bp_treated" if use.bp_lowering else "diabetes"
        issues.add(pid, field, "medication record without a start date", use.reference)
        return
    uses.setdefault(pid, []).append(use)


def read_patients(folder: Path, issues: IssueCollector, site: str) -> pd.DataFrame:
    """One row per Patient: id, site, sex, birth and death days (NaT when unknown)."""
    rows = []
    seen: set[str] = set()
    for res in iter_ndjson(folder, "Patient"):
        pid = str(res.get("id", ""))
        if not pid:
            issues.add("-", "id", "Patient without an id")
            continue
        if pid in seen:
            issues.add(pid, "id", "duplicate Patient resource")
            continue
        seen.add(pid)
        gender = res.get("gender")
        if gender not in ("female", "male"):
            issues.add(pid, "sex", "gender must be 'female' or 'male'", gender)
            gender = None
        birth = fhir_day(res.get("birthDate"))
        if birth is None:
            issues.add(pid, "age", "birthDate missing or not a date", res.get("birthDate"))
        org = ref_id(res.get("managingOrganization"))
        deceased = fhir_day(res.get("deceasedDateTime"))
        rows.append((pid, org or site, gender, birth, deceased))
    df = pd.DataFrame(rows, columns=["patient_id", "site", "sex", "birth", "deceased"])
    df["birth"] = to_days(df["birth"])
    df["deceased"] = to_days(df["deceased"])
    return df
