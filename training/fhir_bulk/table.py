"""The point-in-time table: features at the index date, diabetes, treatment, outcomes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.bp_treatment import MedicationUse, bp_treated
from models.diabetes_status import (
    Diagnosis,
    LabResult,
    diagnosed_by,
    diagnosis,
    has_diabetes,
)
from models.ncd_features import FEATURE_BY_NAME, MEASURED_FEATURES, feature_columns
from models.ncd_lookback import LOOKBACK_DAYS
from training.fhir_bulk.ndjson import codes_of, fhir_day, iter_ndjson, ref_id
from training.fhir_bulk.report import BuildReport, FeatureIssue, IssueCollector
from training.fhir_bulk.resources import (
    condition_kind,
    drug_use,
    observation_rows,
    read_patients,
    to_days,
)

__all__ = ["build_feature_table", "check_leakage"]

_MIN_DAY = "0000-00-00"
_DAYS_PER_YEAR = 365.25


def build_feature_table(
    ndjson_dir: Path | str,
    *,
    index_date: date | Mapping[str, date],
    lookback_days: int = LOOKBACK_DAYS,
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
    issues = IssueCollector(strict)
    rep = report if report is not None else BuildReport()

    patients = read_patients(folder, issues, site)
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
        pid, when = observation_rows(res, issues, obs_rows)
        _note_seen(last_seen, pid, when)
    rep.observations = n_obs
    cond_rows: list[tuple[str, str, str]] = []
    diagnoses: dict[str, list[Diagnosis]] = {}
    for res in iter_ndjson(folder, "Condition"):
        rep.conditions += 1
        pid = ref_id(res.get("subject"))
        kind = condition_kind(res)
        dx = diagnosis(res)
        if pid is not None and dx.diabetes:
            diagnoses.setdefault(pid, []).append(dx)
        when = fhir_day(res.get("onsetDateTime")) or fhir_day(res.get("recordedDate"))
        _note_seen(last_seen, pid, when)
        if pid is None or kind is None:
            continue
        if when is None:
            issues.add(pid, kind, "condition without onsetDateTime or recordedDate")
            continue
        if res.get("verificationStatus") and any(
            c in ("refuted", "entered-in-error") for _, c in codes_of(res["verificationStatus"])
        ):
            continue
        cond_rows.append((pid, kind, when))
    medications = {f"Medication/{res.get('id')}": res for res in iter_ndjson(folder, "Medication")}
    drug_uses: dict[str, list[MedicationUse]] = {}
    for res in iter_ndjson(folder, "MedicationRequest"):
        rep.medication_requests += 1
        pid = ref_id(res.get("subject"))
        when = fhir_day(res.get("authoredOn"))
        _note_seen(last_seen, pid, when)
        drug_use(res, pid, medications, issues, drug_uses)
    for res in iter_ndjson(folder, "MedicationStatement"):
        rep.medication_statements += 1
        drug_use(res, ref_id(res.get("subject")), medications, issues, drug_uses)

    for res in iter_ndjson(folder, "Encounter"):  # last contact only
        pid = ref_id(res.get("subject"))
        period = res.get("period") or {}
        when = fhir_day(period.get("end")) or fhir_day(period.get("start"))
        _note_seen(last_seen, pid, when)

    table = _features(patients, obs_rows, lookback_days, issues)
    has_meds = any(folder.glob("MedicationRequest*.ndjson")) or any(
        folder.glob("MedicationStatement*.ndjson")
    )
    complete = complete_conditions or (has_meds and any(folder.glob("Condition*.ndjson")))
    table = _diabetes_and_treatment(table, drug_uses, diagnoses, has_meds, complete)
    table = _outcomes(table, cond_rows, last_seen, end_date, issues)
    rep.issues = issues.issues
    return table[feature_columns()].reset_index(drop=True)


def _note_seen(last_seen: dict[str, str], pid: str | None, when: str | None) -> None:
    """Keep each patient's last dated resource (where follow-up ends)."""
    if pid and when and when > last_seen.get(pid, _MIN_DAY):
        last_seen[pid] = when


def _features(
    patients: pd.DataFrame,
    obs_rows: list[tuple[str, str, str, float]],
    lookback_days: int,
    issues: IssueCollector,
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
    obs["date"] = to_days(obs["date"])
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
    issues: IssueCollector,
) -> pd.DataFrame:
    conds = pd.DataFrame(cond_rows, columns=["patient_id", "kind", "date"])
    conds["date"] = to_days(conds["date"])
    follow = to_days(table["patient_id"].map(last_seen))
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
