"""FHIR R4 Bulk Data NDJSON -> point-in-time NCD feature table (contract C2).

Reads ``Patient``, ``Observation``, ``Condition``, ``MedicationRequest`` and
``MedicationStatement`` NDJSON files (with ``Medication`` for referenced drugs; one
resource per line, files named ``<Type>.ndjson`` or ``<Type>.*.ndjson``, as a Bulk
``$export`` writes them) and builds one row per patient at an index date:

* Features: for each measured quantity, the most recent Observation dated on or
  before the index date and no more than ``lookback_days`` before it; its date goes in
  ``<name>_date``. Units are converted per STANDARDS.md (:mod:`models.ncd_features`);
  nothing found means NaN, never a default.
* ``diabetes``: diabetes at the index date, by :mod:`models.diabetes_status`, the
  rule serving applies today: a diabetes Condition (SNOMED CT / ICD-10 E10-E14) that
  has started and not abated by the index date, a drug used in diabetes (ATC A10)
  whose dates cover the index date (the ``bp_treated`` date rules), or the latest
  HbA1c >= 6.5 % / fasting glucose >= 7.0 mmol/L. Statuses (clinical status, drug
  status) are as at export time and are read only where ``meta.lastUpdated`` shows
  they already held at the index date. 0 when nothing counts and the export has both
  Condition and medication files (or the caller says the diagnoses are complete);
  NaN otherwise (a normal HbA1c alone is not "no diabetes").
* ``bp_treated``: on a blood-pressure-lowering drug (ATC C02, C03, C07, C08, C09) at
  the index date, by :mod:`models.bp_treatment`, the rule serving applies today: a
  MedicationRequest or MedicationStatement whose dates cover the index date (not the
  look-back: an order counts for a year, a period until its end). Statuses are as at
  export time, so one counts only where ``meta.lastUpdated`` shows it already held at
  the index date; otherwise the dates decide (a status changed after the index date
  would leak the future). 0 when nothing counts; NaN when the export has neither
  medication file (unknown, not untreated).
* ``Encounter`` files, when present, count only as contacts (follow-up).
* Outcomes: the first MI/stroke (``cvd``) or diabetes Condition dated *after* the index
  date. Follow-up ends at the patient's last dated resource, death, or ``end_date``,
  whichever is first; no event by then is censoring. Death is censoring (no cause of
  death in these resources). Someone with the disease on or before the index date is
  not at risk: the outcome is NaN and the report says ``prior-disease``.

Problems are collected per patient, field and rule in a :class:`BuildReport`; with
``strict=True`` the first problem raises :class:`FeatureTableError`. The table itself
can be checked for leakage with :func:`check_leakage`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from models.bp_treatment import MedicationUse, bp_treated, medication_use
from models.diabetes_status import (
    Diagnosis,
    LabResult,
    diagnosed_by,
    diagnosis,
    has_diabetes,
)
from models.ncd_features import (
    ATC_SYSTEM,
    BP_PANEL_LOINC,
    CVD_CONDITION_CODES,
    DIABETES_CONDITION_CODES,
    FEATURE_BY_NAME,
    GLUCOSE_LOWERING_ATC,
    LOINC_TO_FEATURE,
    MEASURED_FEATURES,
    SMOKING_CURRENT_SNOMED,
    SMOKING_LOINC,
    SMOKING_NOT_CURRENT_SNOMED,
    UnitError,
    convert,
    feature_columns,
    icd10_is_cvd,
    icd10_is_diabetes,
)

__all__ = [
    "BuildReport",
    "FeatureIssue",
    "FeatureTableError",
    "build_feature_table",
    "check_leakage",
    "iter_ndjson",
]

log = logging.getLogger(__name__)

try:  # orjson parses NDJSON ~3x faster; the standard library gives the same result
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is in the train extra
    _loads = json.loads
_MIN_DAY = "0000-00-00"
_FEATURE_LOINC = frozenset(LOINC_TO_FEATURE)
_KNOWN_LOINC = _FEATURE_LOINC | {SMOKING_LOINC, BP_PANEL_LOINC}

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm")
ATC = ATC_SYSTEM
_DAYS_PER_YEAR = 365.25


class FeatureIssue(BaseModel):
    """One problem found in the input, for one patient and field."""

    patient_id: str
    field: str
    rule: str
    value: str | None = None


class FeatureTableError(ValueError):
    """Input that cannot give a trustworthy feature table (strict mode, or leakage)."""

    def __init__(self, issues: list[FeatureIssue]) -> None:
        self.issues = issues
        first = issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(
            f"patient {first.patient_id}: {first.field}: {first.rule}"
            + (f" (value {first.value})" if first.value is not None else "")
            + more
        )


class BuildReport(BaseModel):
    """What the builder found: counts and every problem, per patient and field."""

    patients: int = 0
    observations: int = 0
    conditions: int = 0
    medication_requests: int = 0
    medication_statements: int = 0
    issues: list[FeatureIssue] = []

    def counts(self) -> dict[str, int]:
        """Number of issues per ``field:rule``."""
        return dict(Counter(f"{i.field}:{i.rule}" for i in self.issues))


class _Collector:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.issues: list[FeatureIssue] = []

    def add(self, patient_id: str, field: str, rule: str, value: object = None) -> None:
        issue = FeatureIssue(
            patient_id=patient_id,
            field=field,
            rule=rule,
            value=None if value is None else str(value),
        )
        if self.strict:
            raise FeatureTableError([issue])
        self.issues.append(issue)


def iter_ndjson(ndjson_dir: Path, resource_type: str) -> Iterator[dict[str, Any]]:
    """Resources of one type from ``<Type>.ndjson`` / ``<Type>.*.ndjson`` files.

    Raises:
        FeatureTableError: A line that is not JSON, or of another resource type.
    """
    files = sorted(ndjson_dir.glob(f"{resource_type}.ndjson")) + sorted(
        ndjson_dir.glob(f"{resource_type}.*.ndjson")
    )
    for path in files:
        with path.open("rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path.name}:{lineno}"
                try:
                    res = _loads(line)
                except ValueError as exc:  # orjson / json decode errors
                    raise _file_error(where, f"not valid JSON ({exc})") from exc
                if not isinstance(res, dict) or res.get("resourceType") != resource_type:
                    raise _file_error(where, f"not a {resource_type} resource")
                yield res


def _file_error(where: str, rule: str) -> FeatureTableError:
    return FeatureTableError([FeatureIssue(patient_id="-", field=where, rule=rule)])


def _ref_id(reference: dict[str, Any] | None) -> str | None:
    if not reference:
        return None
    ref = str(reference.get("reference", ""))
    return ref.rsplit("/", 1)[-1] if ref else None


def _date(value: object) -> str | None:
    """The ``YYYY-MM-DD`` day of a FHIR date/dateTime (kept as text: ISO days sort)."""
    if not isinstance(value, str) or len(value) < 10 or value[4] != "-" or value[7] != "-":
        return None
    day = value[:10]
    return day if day[:4].isdigit() and day[5:7].isdigit() and day[8:10].isdigit() else None


def _codes(concept: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not concept:
        return []
    return [(c.get("system", ""), c.get("code", "")) for c in concept.get("coding", ())]


def _days(values: pd.Series) -> pd.Series:
    """ISO day strings -> datetime64 (an impossible calendar day becomes NaT)."""
    return pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")


def _obs_date(res: dict[str, Any]) -> str | None:
    return (
        _date(res.get("effectiveDateTime"))
        or _date((res.get("effectivePeriod") or {}).get("start"))
        or _date(res.get("issued"))
    )


def _quantity(
    feature: str, vq: dict[str, Any] | None, pid: str, issues: _Collector
) -> float | None:
    if not vq or "value" not in vq:
        issues.add(pid, feature, "observation without valueQuantity.value")
        return None
    unit = str(vq.get("code") or vq.get("unit") or "")
    try:
        value = convert(feature, float(vq["value"]), unit)
    except UnitError as exc:
        issues.add(pid, feature, f"unit not accepted (allowed: {', '.join(exc.allowed)})", unit)
        return None
    except (TypeError, ValueError):
        issues.add(pid, feature, "value is not a number", vq.get("value"))
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
        )
        return None
    return value


def _observation_rows(
    res: dict[str, Any], issues: _Collector, rows: list[tuple[str, str, str, float]]
) -> tuple[str | None, str | None]:
    """Append the feature values of one Observation to ``rows``; return (patient, day)."""
    pid = _ref_id(res.get("subject"))
    when = _obs_date(res)
    if pid is None or res.get("status") in ("entered-in-error", "cancelled"):
        return pid, None
    codes = {code for system, code in _codes(res.get("code")) if system == LOINC}
    if when is None:
        if codes & _KNOWN_LOINC:
            issues.add(pid, "effective", "observation without a date")
        return pid, None
    if SMOKING_LOINC in codes:
        answer = {c for s, c in _codes(res.get("valueCodeableConcept")) if s == SNOMED}
        if answer & SMOKING_CURRENT_SNOMED:
            rows.append((pid, "smoking", when, 1.0))
        elif answer & SMOKING_NOT_CURRENT_SNOMED:
            rows.append((pid, "smoking", when, 0.0))
        return pid, when
    for code in codes:
        feature = LOINC_TO_FEATURE.get(code)
        if feature is not None:
            value = _quantity(feature, res.get("valueQuantity"), pid, issues)
            if value is not None:
                rows.append((pid, feature, when, value))
    if BP_PANEL_LOINC in codes or not codes & _FEATURE_LOINC:
        for comp in res.get("component", ()):
            for system, code in _codes(comp.get("code")):
                feature = LOINC_TO_FEATURE.get(code)
                if system == LOINC and feature in ("sbp", "dbp"):
                    value = _quantity(feature, comp.get("valueQuantity"), pid, issues)
                    if value is not None:
                        rows.append((pid, feature, when, value))
    return pid, when


def _condition_kind(res: dict[str, Any]) -> str | None:
    for system, code in _codes(res.get("code")):
        if system == SNOMED and code in CVD_CONDITION_CODES:
            return "cvd"
        if system == SNOMED and code in DIABETES_CONDITION_CODES:
            return "diabetes"
        if system in ICD10 and icd10_is_cvd(code):
            return "cvd"
        if system in ICD10 and icd10_is_diabetes(code):
            return "diabetes"
    return None


def _drug_use(
    res: dict[str, Any],
    pid: str | None,
    medications: dict[str, dict[str, Any]],
    issues: _Collector,
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


def build_feature_table(
    ndjson_dir: Path | str,
    *,
    index_date: date | Mapping[str, date],
    lookback_days: int = 730,
    end_date: date | None = None,
    site: str = "",
    strict: bool = False,
    report: BuildReport | None = None,
    complete_conditions: bool = False,
) -> pd.DataFrame:
    """Build the C2 feature table from a FHIR Bulk NDJSON export.

    Args:
        ndjson_dir: Folder with ``Patient``, ``Observation``, ``Condition``,
            ``MedicationRequest``, ``MedicationStatement`` and ``Medication`` NDJSON
            files (missing types are treated as empty).
        index_date: One index date for everyone, or a per-patient mapping (patients
            not in the mapping are left out).
        lookback_days: How far before the index date a measurement may be;
            ``bp_treated`` and ``diabetes`` have their own date rules.
        end_date: End of data (e.g. the export date); follow-up never runs past it.
        site: Value for the ``site`` column when a Patient has no
            ``managingOrganization`` reference.
        strict: Raise :class:`FeatureTableError` at the first problem instead of
            collecting it.
        report: If given, filled with counts and every problem found.
        complete_conditions: The export is known to hold every diagnosis (e.g. a
            records-linkage cohort): no diabetes evidence then means ``diabetes`` = 0
            instead of unknown, even without Condition or medication files.

    Returns:
        One row per patient, columns :func:`models.ncd_features.feature_columns`.

    Raises:
        FeatureTableError: Unreadable NDJSON, or any problem when ``strict``.
    """
    folder = Path(ndjson_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of FHIR Bulk NDJSON files")
    issues = _Collector(strict)
    rep = report if report is not None else BuildReport()

    patients = _patients(folder, issues, site)
    rep.patients = len(patients)
    if isinstance(index_date, Mapping):
        patients = patients[patients["patient_id"].isin(list(index_date))].copy()
        patients["index_date"] = pd.to_datetime(patients["patient_id"].map(dict(index_date)))
    else:
        patients["index_date"] = pd.Timestamp(index_date)

    obs_rows: list[tuple[str, str, str, float]] = []
    last_seen: dict[str, str] = {}
    n_obs = 0
    for res in iter_ndjson(folder, "Observation"):
        n_obs += 1
        pid, when = _observation_rows(res, issues, obs_rows)
        if pid and when and when > last_seen.get(pid, _MIN_DAY):
            last_seen[pid] = when
    rep.observations = n_obs
    cond_rows: list[tuple[str, str, str]] = []
    diagnoses: dict[str, list[Diagnosis]] = {}
    for res in iter_ndjson(folder, "Condition"):
        rep.conditions += 1
        pid = _ref_id(res.get("subject"))
        kind = _condition_kind(res)
        dx = diagnosis(res)
        if pid is not None and dx.diabetes:
            diagnoses.setdefault(pid, []).append(dx)
        when = _date(res.get("onsetDateTime")) or _date(res.get("recordedDate"))
        if pid and when and when > last_seen.get(pid, _MIN_DAY):
            last_seen[pid] = when
        if pid is None or kind is None:
            continue
        if when is None:
            issues.add(pid, kind, "condition without onsetDateTime or recordedDate")
            continue
        if res.get("verificationStatus") and any(
            c in ("refuted", "entered-in-error") for _, c in _codes(res["verificationStatus"])
        ):
            continue
        cond_rows.append((pid, kind, when))
    medications = {f"Medication/{res.get('id')}": res for res in iter_ndjson(folder, "Medication")}
    drug_uses: dict[str, list[MedicationUse]] = {}
    for res in iter_ndjson(folder, "MedicationRequest"):
        rep.medication_requests += 1
        pid = _ref_id(res.get("subject"))
        when = _date(res.get("authoredOn"))
        if pid and when and when > last_seen.get(pid, _MIN_DAY):
            last_seen[pid] = when
        _drug_use(res, pid, medications, issues, drug_uses)
    for res in iter_ndjson(folder, "MedicationStatement"):
        rep.medication_statements += 1
        _drug_use(res, _ref_id(res.get("subject")), medications, issues, drug_uses)

    for res in iter_ndjson(folder, "Encounter"):  # last contact only
        pid = _ref_id(res.get("subject"))
        period = res.get("period") or {}
        when = _date(period.get("end")) or _date(period.get("start"))
        if pid and when and when > last_seen.get(pid, _MIN_DAY):
            last_seen[pid] = when

    table = _features(patients, obs_rows, lookback_days, issues)
    has_meds = any(folder.glob("MedicationRequest*.ndjson")) or any(
        folder.glob("MedicationStatement*.ndjson")
    )
    complete = complete_conditions or (has_meds and any(folder.glob("Condition*.ndjson")))
    table = _diabetes_and_treatment(table, drug_uses, diagnoses, has_meds, complete)
    table = _outcomes(table, cond_rows, last_seen, end_date, issues)
    rep.issues = issues.issues
    return table[feature_columns()].reset_index(drop=True)


def _patients(folder: Path, issues: _Collector, site: str) -> pd.DataFrame:
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
        birth = _date(res.get("birthDate"))
        if birth is None:
            issues.add(pid, "age", "birthDate missing or not a date", res.get("birthDate"))
        org = _ref_id(res.get("managingOrganization"))
        deceased = _date(res.get("deceasedDateTime"))
        rows.append((pid, org or site, gender, birth, deceased))
    df = pd.DataFrame(rows, columns=["patient_id", "site", "sex", "birth", "deceased"])
    df["birth"] = _days(df["birth"])
    df["deceased"] = _days(df["deceased"])
    return df


def _features(
    patients: pd.DataFrame,
    obs_rows: list[tuple[str, str, str, float]],
    lookback_days: int,
    issues: _Collector,
) -> pd.DataFrame:
    table = patients.copy()
    table["age"] = (table["index_date"] - table["birth"]).dt.days / _DAYS_PER_YEAR
    bad_age = table["age"].notna() & ~table["age"].between(
        FEATURE_BY_NAME["age"].minimum, FEATURE_BY_NAME["age"].maximum
    )
    for pid, age in table.loc[bad_age, ["patient_id", "age"]].itertuples(index=False):
        issues.add(pid, "age", "impossible or adult-only: must be 18-110 years", f"{age:.1f}")
    table.loc[bad_age, "age"] = np.nan
    obs = pd.DataFrame(obs_rows, columns=["patient_id", "feature", "date", "value"])
    obs["date"] = _days(obs["date"])
    obs = obs.merge(table[["patient_id", "index_date"]], on="patient_id", how="inner")
    window = (obs["date"] <= obs["index_date"]) & (
        obs["date"] >= obs["index_date"] - timedelta(days=lookback_days)
    )
    obs = obs[window].drop_duplicates(["patient_id", "feature", "date", "value"])
    latest = obs.groupby(["patient_id", "feature"])["date"].transform("max")
    obs = obs[obs["date"] == latest]
    # Same day, different values: refuse to pick one.
    spread = obs.groupby(["patient_id", "feature"])["value"].agg(["min", "max", "count"])
    conflicts = spread[spread["count"] > 1]
    for (pid, feature), row in conflicts.iterrows():
        issues.add(
            str(pid),
            str(feature),
            "conflicting values on the same date",
            f"{row['min']:g} vs {row['max']:g}",
        )
    obs = obs.drop_duplicates(["patient_id", "feature"], keep=False)
    values = obs.pivot(index="patient_id", columns="feature", values="value")
    dates = obs.pivot(index="patient_id", columns="feature", values="date")
    table = table.set_index("patient_id")
    for name in MEASURED_FEATURES:
        table[name] = values.get(name, np.nan)
        table[f"{name}_date"] = dates.get(name, pd.NaT)
    return table.reset_index()


def _labs(row: Any) -> list[LabResult]:
    """The latest HbA1c and fasting glucose of one table row (within the look-back)."""
    found = []
    for name in ("hba1c", "fasting_glucose"):
        value, day = getattr(row, name), getattr(row, f"{name}_date")
        if not pd.isna(value) and not pd.isna(day):
            found.append(LabResult(name, float(value), day.date()))
    return found


def _diabetes_and_treatment(
    table: pd.DataFrame,
    drug_uses: dict[str, list[MedicationUse]],
    diagnoses: dict[str, list[Diagnosis]],
    has_meds: bool,
    complete: bool,
) -> pd.DataFrame:
    # Statuses were read at export time (status_read_on=None), after every index date.
    # No medication file at all: treatment is unknown, not "untreated"; diabetes is
    # unknown unless diagnoses and medications are both complete.
    treated: list[float | None] = []
    diabetic: list[float | None] = []
    columns = ["patient_id", "index_date", "hba1c", "hba1c_date"]
    columns += ["fasting_glucose", "fasting_glucose_date"]
    for row in table[columns].itertuples(index=False):
        pid, when = str(row.patient_id), row.index_date.date()
        uses = drug_uses.get(pid, [])
        treated.append(bp_treated(uses, when, status_read_on=None, complete=has_meds)[0])
        finding = has_diabetes(
            diagnoses.get(pid, []), uses, _labs(row), when, status_read_on=None, complete=complete
        )
        diabetic.append(finding.value)
    table["bp_treated"] = np.array([np.nan if v is None else v for v in treated], dtype=float)
    table["diabetes"] = np.array([np.nan if v is None else v for v in diabetic], dtype=float)
    # Diagnosed on or before the index date, even if resolved since: not at risk of a
    # new onset (the rule serving's already-has-outcome applies).
    table["_diagnosed"] = [
        diagnosed_by(diagnoses.get(str(pid), []), when.date()) is not None
        for pid, when in zip(table["patient_id"], table["index_date"], strict=True)
    ]
    return table


def _outcomes(
    table: pd.DataFrame,
    cond_rows: list[tuple[str, str, str]],
    last_seen: dict[str, str],
    end_date: date | None,
    issues: _Collector,
) -> pd.DataFrame:
    conds = pd.DataFrame(cond_rows, columns=["patient_id", "kind", "date"])
    conds["date"] = _days(conds["date"])
    follow = _days(table["patient_id"].map(last_seen))
    follow = follow.where(
        table["deceased"].isna() | (follow < table["deceased"]), table["deceased"]
    )
    if end_date is not None:
        follow = follow.clip(upper=pd.Timestamp(end_date))
    table["_end"] = follow
    for kind in ("cvd", "diabetes"):
        rows = conds[conds["kind"] == kind].merge(
            table[["patient_id", "index_date"]], on="patient_id"
        )
        if kind == "diabetes":
            prior = set(table.loc[table["_diagnosed"], "patient_id"])
        else:
            prior = set(rows.loc[rows["date"] <= rows["index_date"], "patient_id"])
        after = rows[rows["date"] > rows["index_date"]].groupby("patient_id")["date"].min()
        first = pd.to_datetime(
            table[["patient_id"]]
            .merge(after.rename("first").reset_index(), on="patient_id", how="left")["first"]
            .to_numpy()
        )
        first = pd.Series(first, index=table.index)
        first = first.where(first <= table["_end"])
        event = first.notna()
        stop = first.where(event, table["_end"])
        time = (stop - table["index_date"]).dt.days / _DAYS_PER_YEAR
        table[f"{kind}_event"] = event.astype(float)
        table[f"{kind}_time"] = time
        not_at_risk = table["patient_id"].isin(prior)
        no_follow = time.isna() | (time < 0)
        if kind == "cvd":
            for pid in table.loc[not_at_risk, "patient_id"]:
                issues.add(pid, "cvd_event", "prior-disease: MI or stroke on or before index date")
        table.loc[not_at_risk | no_follow, [f"{kind}_event", f"{kind}_time"]] = np.nan
    return table.drop(columns=["_end", "_diagnosed"])


def check_leakage(table: pd.DataFrame) -> list[FeatureIssue]:
    """Problems that would leak the future into training, one per patient and field.

    Refused: a measurement date after the index date, and an outcome time that is
    negative (an outcome dated before the index date). Training must refuse a table
    for which this returns anything.
    """
    found: list[FeatureIssue] = []
    index = pd.to_datetime(table["index_date"])
    for name in MEASURED_FEATURES:
        col = f"{name}_date"
        if col not in table:
            continue
        when = pd.to_datetime(table[col])
        for pid, value in table.loc[when > index, ["patient_id", col]].itertuples(index=False):
            found.append(
                FeatureIssue(
                    patient_id=str(pid),
                    field=col,
                    rule="measured after the index date",
                    value=str(value),
                )
            )
    for kind in ("cvd", "diabetes"):
        col = f"{kind}_time"
        if col not in table:
            continue
        bad = table[col] < 0
        for pid, value in table.loc[bad, ["patient_id", col]].itertuples(index=False):
            found.append(
                FeatureIssue(
                    patient_id=str(pid),
                    field=col,
                    rule="outcome dated before the index date",
                    value=f"{value:.3f}",
                )
            )
    return found
