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
the feature's plausible range (:data:`models.ncd_features.FEATURES`), an unreadable
flag, number or date, and a repeated ``patient_id`` + ``index_date`` are problems:
each is recorded (spreadsheet row, patient, field, rule) in a
:class:`training.fhir_bulk.ProblemLog` and the value is not used. Whether problems
refuse the file is decided once, in :mod:`training.ncd_input`.

The encoding (UTF-8, UTF-8 with BOM, UTF-16 with BOM, else Windows-1252) and the
delimiter (``,`` ``;`` or tab) are detected (:func:`sniff`); with ``;`` a decimal comma
(``5,2``) is read as a decimal point. Works on chunks (:func:`read_csv_chunks`) so a
million rows fit in bounded memory.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
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
from training.fhir_bulk import FeatureIssue, FeatureTableError, ProblemLog

__all__ = ["CsvFormat", "CsvInputError", "normalise_frame", "read_csv_chunks", "sniff"]

_FLAGS = {"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "yes": 1.0, "no": 0.0, "true": 1.0,
          "false": 0.0, "y": 1.0, "n": 0.0}  # fmt: skip
_SEX = {"female": "female", "f": "female", "male": "male", "m": "male"}
_UNIT_COLUMNS = {"total_chol": "mmol/L", "hdl": "mmol/L", "hba1c": "%", "fasting_glucose": "mmol/L"}
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
_SAVE_HINT = "save it from the spreadsheet as 'CSV UTF-8 (comma delimited)'"


class CsvInputError(FeatureTableError):
    """The file cannot be read as the documented CSV (encoding, delimiter, columns)."""


def _file_error(field: str, rule: str) -> CsvInputError:
    return CsvInputError([FeatureIssue(patient_id="-", field=field, rule=rule)])


@dataclass(frozen=True)
class CsvFormat:
    """How a CSV file is written: found by :func:`sniff`."""

    encoding: str
    delimiter: str

    def describe(self) -> str:
        """``encoding cp1252, delimiter semicolon``."""
        return f"encoding {self.encoding}, delimiter {_DELIMITERS[self.delimiter]}"


def _encoding(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            return "utf-16"
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        utf8 = True
        while block := fh.read(1 << 20):
            if b"\x00" in block:
                raise _file_error(
                    "file", f"not a text CSV (it contains NUL bytes: a spreadsheet or UTF-16 "
                    f"without a byte-order mark?); {_SAVE_HINT}",
                )  # fmt: skip
            if utf8:
                try:
                    decoder.decode(block)
                except UnicodeDecodeError:
                    utf8 = False
    # Not UTF-8: Windows-1252 (what Excel writes on Western Windows), which reads every
    # byte but five; those five mean another code page, read as latin-1.
    if utf8:
        return "utf-8"
    try:
        path.read_bytes().decode("cp1252")
    except UnicodeDecodeError:
        return "latin-1"
    return "cp1252"


def sniff(path: Path | str) -> CsvFormat:
    """The encoding and delimiter of a CSV file.

    Raises:
        CsvInputError: binary content, an empty file, or a header line with no comma,
            semicolon or tab (with a plain hint on how to save the file).
    """
    path = Path(path)
    encoding = _encoding(path)
    with path.open(encoding=encoding, newline="") as fh:
        header = fh.readline().strip("\r\n")
    if not header.strip():
        raise _file_error("file", "empty: no header line")
    counts = {d: len(next(csv.reader([header], delimiter=d))) - 1 for d in _DELIMITERS}
    delimiter = max(counts, key=lambda d: counts[d])
    if counts[delimiter] == 0:
        raise _file_error(
            "file", f"cannot find the column separator: the header line has no comma, "
            f"semicolon or tab ({header[:60]!r}); {_SAVE_HINT}",
        )  # fmt: skip
    return CsvFormat(encoding, delimiter)


def _report_bad(
    frame: pd.DataFrame, bad: pd.Series, field: str, rule: str, raw: pd.Series,
    problems: ProblemLog,
) -> None:  # fmt: skip
    if not bad.any():
        return
    rows = frame.index[bad.to_numpy()]
    for row, pid, value in zip(rows, frame.loc[bad, "patient_id"], raw[bad], strict=True):
        problems.add(FeatureIssue(patient_id=str(pid), field=field, rule=rule,
                                  value=str(value), row=int(row) + 2))  # fmt: skip


def _flag(frame: pd.DataFrame, name: str, problems: ProblemLog) -> pd.Series:
    if name not in frame:
        return pd.Series(np.nan, index=frame.index)
    raw = frame[name]
    text = raw.astype("string").str.strip().str.lower()
    mapped = text.map(_FLAGS).astype(float)
    bad = text.notna() & (text != "") & mapped.isna()
    _report_bad(frame, bad, name, "must be 1/0, yes/no or true/false", raw, problems)
    return mapped


def _number(frame: pd.DataFrame, name: str, problems: ProblemLog, decimal_comma: bool) -> pd.Series:
    if name not in frame:
        return pd.Series(np.nan, index=frame.index)
    raw = frame[name]
    text = raw.astype("string").str.strip()
    if decimal_comma:
        text = text.str.replace(",", ".", regex=False)
    values = pd.to_numeric(text, errors="coerce").astype(float)
    bad = text.notna() & values.isna() & (text != "")
    _report_bad(frame, bad, name, "not a number", raw, problems)
    return values


def _date(frame: pd.DataFrame, name: str, problems: ProblemLog) -> pd.Series:
    if name not in frame:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    raw = frame[name]
    values = pd.to_datetime(raw, errors="coerce", format="mixed")
    bad = raw.notna() & values.isna() & (raw.astype("string").str.strip() != "")
    _report_bad(frame, bad, name, "not a date (use YYYY-MM-DD)", raw, problems)
    return values


def _in_range(
    frame: pd.DataFrame, name: str, values: pd.Series, raw: pd.Series, problems: ProblemLog
) -> pd.Series:
    spec = FEATURE_BY_NAME[name]
    low = -np.inf if spec.minimum is None else spec.minimum
    high = np.inf if spec.maximum is None else spec.maximum
    bad = values.notna() & ((values < low) | (values > high) | ~np.isfinite(values))
    rule = f"impossible value: must be {low:g}-{high:g} {spec.unit}"
    _report_bad(frame, bad, name, rule, raw, problems)
    return values.where(~bad)


def normalise_frame(
    frame: pd.DataFrame,
    problems: ProblemLog,
    *,
    chol_unit: str = "mmol/L",
    decimal_comma: bool = False,
) -> pd.DataFrame:
    """Turn one chunk of the documented CSV into C2 columns in canonical units.

    Args:
        frame: Raw CSV rows read as text (``dtype=str``), index = data row from 0.
        problems: Receives every problem found (the value is then not used).
        chol_unit: Unit of ``total_chol`` and ``hdl`` when no ``*_unit`` column says.
        decimal_comma: Numbers may use a decimal comma (``;``-separated files).

    Returns:
        The C2 columns (:func:`models.ncd_features.feature_columns`).

    Raises:
        CsvInputError: A required column is missing (naming the columns found).
    """
    found = ", ".join(map(str, frame.columns[:12]))
    for column in ("patient_id", "sex"):
        if column not in frame:
            raise _file_error(column, f"required column missing (columns found: {found})")
    if "age" not in frame and not {"birth_date", "index_date"} <= set(frame):
        raise _file_error(
            "age", f"need an age column, or birth_date and index_date (columns found: {found})"
        )
    out = pd.DataFrame(index=frame.index)
    out["patient_id"] = frame["patient_id"].astype("string").str.strip()
    _report_bad(frame, out["patient_id"].fillna("") == "", "patient_id", "empty",
                frame["patient_id"], problems)  # fmt: skip
    out["index_date"] = _date(frame, "index_date", problems)
    out["site"] = frame["site"].fillna("") if "site" in frame else ""
    sex_text = frame["sex"].astype("string").str.strip().str.lower()
    out["sex"] = sex_text.map(_SEX)
    _report_bad(frame, out["sex"].isna(), "sex", "must be female/male (or F/M)", frame["sex"],
                problems)  # fmt: skip
    if "age" in frame:
        age = _number(frame, "age", problems, decimal_comma)
    else:
        birth = _date(frame, "birth_date", problems)
        age = (out["index_date"] - birth).dt.days / 365.25
    out["age"] = _in_range(frame, "age", age, frame.get("age", age), problems)
    out["smoking"] = _flag(frame, "smoking", problems)
    for name in ("sbp", "dbp", "bmi", "total_chol", "hdl", "hba1c", "fasting_glucose"):
        values = _number(frame, name, problems, decimal_comma)
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
                    _report_bad(frame, rows & values.notna(), unit_col, rule, units, problems)
            values = converted
        raw = frame.get(name, values)
        out[name] = _in_range(frame, name, values, raw, problems)
    out["diabetes"] = _flag(frame, "diabetes", problems)
    out["bp_treated"] = _flag(frame, "bp_treated", problems)
    for name in MEASURED_FEATURES:
        out[f"{name}_date"] = _date(frame, f"{name}_date", problems)
    for name in OUTCOME_COLUMNS:
        out[name] = _number(frame, name, problems, decimal_comma)
    return out[feature_columns()]


def read_csv_chunks(
    path: Path | str,
    problems: ProblemLog,
    *,
    chunksize: int = 100_000,
    chol_unit: str = "mmol/L",
) -> Iterator[pd.DataFrame]:
    """Normalised C2 chunks of a (possibly huge) CSV, ``chunksize`` rows at a time.

    A ``patient_id`` + ``index_date`` seen before (in any chunk) is a problem.

    Raises:
        CsvInputError: the file cannot be read as a CSV (see :func:`sniff`).
    """
    fmt = sniff(path)
    seen: dict[str, int] = {}
    reader = pd.read_csv(
        path, dtype=str, chunksize=chunksize, keep_default_na=True, sep=fmt.delimiter,
        encoding=fmt.encoding, skipinitialspace=True,
    )  # fmt: skip
    with reader:
        try:
            for chunk in reader:
                chunk.columns = [str(c).strip() for c in chunk.columns]
                table = normalise_frame(
                    chunk, problems, chol_unit=chol_unit, decimal_comma=fmt.delimiter == ";"
                )
                _duplicates(table, seen, problems)
                yield table
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise _file_error("file", f"not a readable CSV ({fmt.describe()}): {exc}") from exc


def _duplicates(table: pd.DataFrame, seen: dict[str, int], problems: ProblemLog) -> None:
    keys = table["patient_id"].fillna("") + "|" + table["index_date"].astype("string").fillna("")
    for row, key, pid in zip(table.index, keys, table["patient_id"], strict=True):
        first = seen.setdefault(key, int(row) + 2)
        if first != int(row) + 2:
            problems.add(FeatureIssue(patient_id=str(pid), field="patient_id",
                                      rule="duplicate patient_id and index_date",
                                      value=f"first at row {first}", row=int(row) + 2))  # fmt: skip
