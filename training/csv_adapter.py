"""Flat CSV -> the NCD feature table (contract C2), for hospitals without FHIR.

One row per patient (and index date). Columns (header names exactly; extra columns are
ignored, missing optional columns become NaN):

================== ======== ==========================================================
column             required meaning
================== ======== ==========================================================
patient_id         yes      any text; unique per index date
sex                yes      ``female`` / ``male`` (also ``F`` / ``M``, any case)
age                yes*     years at the index date (*or ``birth_date`` + ``index_date``)
birth_date         no       ISO date, used when ``age`` is absent
index_date         no       ISO date the features refer to (default: empty)
site               no       clinic / hospital code
smoking            no       current smoker: 1/0, yes/no, true/false
sbp, dbp           no       mmHg
bmi                no       kg/m2
total_chol, hdl    no       in ``total_chol_unit`` / ``hdl_unit``
total_chol_unit    no       ``mmol/L`` or ``mg/dL`` (default: the ``--chol-unit`` option)
hba1c              no       in ``hba1c_unit``: ``%`` (NGSP) or ``mmol/mol`` (IFCC)
fasting_glucose    no       in ``fasting_glucose_unit``: ``mmol/L`` or ``mg/dL``
diabetes           no       1/0, yes/no
bp_treated         no       1/0, yes/no
cvd_event ...      no       outcome columns of C2 (``cvd_event``, ``cvd_time``,
                            ``diabetes_event``, ``diabetes_time``) for training
================== ======== ==========================================================

Empty cells are missing (NaN), never a default. A value in an unknown unit, outside
the feature's plausible range (:data:`models.ncd_features.FEATURES`), or an unreadable
flag becomes missing and is reported (patient, field, rule); ``strict=True`` raises.
Works on chunks (:func:`read_csv_chunks`) so a million rows fit in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from models.ncd_features import (
    FEATURE_BY_NAME,
    MEASURED_FEATURES,
    OUTCOME_COLUMNS,
    UnitError,
    allowed_units,
    convert_array,
    feature_columns,
)
from training.fhir_bulk import FeatureIssue, FeatureTableError

__all__ = ["CsvInputError", "normalise_frame", "read_csv_chunks", "read_csv_table"]

_FLAGS = {"1": 1.0, "0": 0.0, "yes": 1.0, "no": 0.0, "true": 1.0, "false": 0.0,
          "y": 1.0, "n": 0.0}  # fmt: skip
_SEX = {"female": "female", "f": "female", "male": "male", "m": "male"}
_UNIT_COLUMNS = {"total_chol": "mmol/L", "hdl": "mmol/L", "hba1c": "%", "fasting_glucose": "mmol/L"}
_MAX_ISSUES = 10_000  # keep the report bounded on huge bad files


class CsvInputError(FeatureTableError):
    """The CSV cannot be read as a feature table (missing required column, strict mode)."""


def _issue(issues: list[FeatureIssue], strict: bool, pid: object, field: str, rule: str,
           value: object) -> None:  # fmt: skip
    item = FeatureIssue(patient_id=str(pid), field=field, rule=rule, value=str(value))
    if strict:
        raise CsvInputError([item])
    if len(issues) < _MAX_ISSUES:
        issues.append(item)


def _report_bad(
    frame: pd.DataFrame, bad: pd.Series, field: str, rule: str, raw: pd.Series,
    issues: list[FeatureIssue], strict: bool,
) -> None:  # fmt: skip
    if not bad.any():
        return
    for pid, value in zip(frame.loc[bad, "patient_id"], raw[bad], strict=True):
        _issue(issues, strict, pid, field, rule, value)
        if len(issues) >= _MAX_ISSUES and not strict:
            return


def _flag(frame: pd.DataFrame, name: str, issues: list[FeatureIssue], strict: bool) -> pd.Series:
    if name not in frame:
        return pd.Series(np.nan, index=frame.index)
    raw = frame[name]
    text = raw.astype("string").str.strip().str.lower()
    mapped = text.map(_FLAGS).astype(float)
    bad = text.notna() & (text != "") & mapped.isna()
    _report_bad(frame, bad, name, "must be 1/0, yes/no or true/false", raw, issues, strict)
    return mapped


def _number(frame: pd.DataFrame, name: str, issues: list[FeatureIssue], strict: bool) -> pd.Series:
    if name not in frame:
        return pd.Series(np.nan, index=frame.index)
    raw = frame[name]
    values = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = raw.notna() & values.isna() & (raw.astype("string").str.strip() != "")
    _report_bad(frame, bad, name, "not a number", raw, issues, strict)
    return values


def _in_range(
    frame: pd.DataFrame, name: str, values: pd.Series, raw: pd.Series,
    issues: list[FeatureIssue], strict: bool,
) -> pd.Series:  # fmt: skip
    spec = FEATURE_BY_NAME[name]
    low = -np.inf if spec.minimum is None else spec.minimum
    high = np.inf if spec.maximum is None else spec.maximum
    bad = values.notna() & ((values < low) | (values > high) | ~np.isfinite(values))
    rule = f"impossible value: must be {low:g}-{high:g} {spec.unit}"
    _report_bad(frame, bad, name, rule, raw, issues, strict)
    return values.where(~bad)


def normalise_frame(
    frame: pd.DataFrame,
    *,
    chol_unit: str = "mmol/L",
    strict: bool = False,
    issues: list[FeatureIssue] | None = None,
) -> pd.DataFrame:
    """Turn one chunk of the documented CSV into C2 columns in canonical units.

    Args:
        frame: Raw CSV rows read as text (``dtype=str``).
        chol_unit: Unit of ``total_chol`` and ``hdl`` when no ``*_unit`` column says.
        strict: Raise :class:`CsvInputError` at the first bad value.
        issues: Filled with the problems found (bounded to 10,000).

    Returns:
        The C2 columns (:func:`models.ncd_features.feature_columns`).

    Raises:
        CsvInputError: A required column is missing, or any problem when ``strict``.
    """
    found: list[FeatureIssue] = [] if issues is None else issues
    for column in ("patient_id", "sex"):
        if column not in frame:
            raise CsvInputError([FeatureIssue(patient_id="-", field=column,
                                              rule="required column missing")])  # fmt: skip
    if "age" not in frame and not {"birth_date", "index_date"} <= set(frame):
        rule = "need an age column, or birth_date and index_date"
        raise CsvInputError([FeatureIssue(patient_id="-", field="age", rule=rule)])
    out = pd.DataFrame(index=frame.index)
    out["patient_id"] = frame["patient_id"].astype("string").str.strip()
    out["index_date"] = pd.to_datetime(frame.get("index_date"), errors="coerce")
    out["site"] = frame["site"].fillna("") if "site" in frame else ""
    sex_text = frame["sex"].astype("string").str.strip().str.lower()
    out["sex"] = sex_text.map(_SEX)
    _report_bad(frame, out["sex"].isna(), "sex", "must be female/male (or F/M)", frame["sex"],
                found, strict)  # fmt: skip
    if "age" in frame:
        age = _number(frame, "age", found, strict)
    else:
        birth = pd.to_datetime(frame["birth_date"], errors="coerce")
        age = (out["index_date"] - birth).dt.days / 365.25
    out["age"] = _in_range(frame, "age", age, frame.get("age", age), found, strict)
    out["smoking"] = _flag(frame, "smoking", found, strict)
    for name in ("sbp", "dbp", "bmi", "total_chol", "hdl", "hba1c", "fasting_glucose"):
        values = _number(frame, name, found, strict)
        if name in _UNIT_COLUMNS:
            default = chol_unit if name in ("total_chol", "hdl") else _UNIT_COLUMNS[name]
            unit_col = f"{name}_unit"
            units = (
                frame[unit_col].fillna(default).astype("string").str.strip()
                if unit_col in frame
                else pd.Series(default, index=frame.index, dtype="string")
            )
            converted = pd.Series(np.nan, index=frame.index)
            for unit in units.dropna().unique():
                rows = units == unit
                try:
                    converted[rows] = convert_array(name, values[rows], str(unit))
                except UnitError:
                    rule = f"unit not accepted (allowed: {', '.join(allowed_units(name))})"
                    _report_bad(frame, rows & values.notna(), unit_col, rule, units, found, strict)
            values = converted
        raw = frame.get(name, values)
        out[name] = _in_range(frame, name, values, raw, found, strict)
    out["diabetes"] = _flag(frame, "diabetes", found, strict)
    out["bp_treated"] = _flag(frame, "bp_treated", found, strict)
    for name in MEASURED_FEATURES:
        col = f"{name}_date"
        out[col] = pd.to_datetime(frame[col], errors="coerce") if col in frame else pd.NaT
    for name in OUTCOME_COLUMNS:
        out[name] = _number(frame, name, found, strict)
    return out[feature_columns()]


def read_csv_chunks(
    path: Path | str,
    *,
    chunksize: int = 100_000,
    chol_unit: str = "mmol/L",
    strict: bool = False,
    issues: list[FeatureIssue] | None = None,
) -> Iterator[pd.DataFrame]:
    """Normalised C2 chunks of a (possibly huge) CSV, ``chunksize`` rows at a time."""
    with pd.read_csv(path, dtype=str, chunksize=chunksize, keep_default_na=True) as reader:
        for chunk in reader:
            yield normalise_frame(chunk, chol_unit=chol_unit, strict=strict, issues=issues)


def read_csv_table(
    path: Path | str,
    *,
    chol_unit: str = "mmol/L",
    strict: bool = False,
    issues: list[FeatureIssue] | None = None,
) -> pd.DataFrame:
    """The whole CSV as one C2 feature table (see the module docstring for columns)."""
    chunks = list(read_csv_chunks(path, chol_unit=chol_unit, strict=strict, issues=issues))
    if not chunks:
        return pd.DataFrame(columns=feature_columns())
    return pd.concat(chunks, ignore_index=True)
