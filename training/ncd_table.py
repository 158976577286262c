"""The NCD feature table (contract C2): read it, check it, split it by patient, encode it.

:func:`check_table` refuses a table that cannot be trained or evaluated on: required
columns, no leakage (an outcome or measurement dated after the index date), sex coded
female/male, no duplicate patient-index rows, required features present and every
value inside its valid range. Problems are errors (:class:`TrainingDataError`) naming the
patient and field, never silent defaults.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.ncd_lookback import LOOKBACK_DAYS
from training.ncd_config import NcdTrainConfig, SplitConfig

__all__ = [
    "SEX_CODES",
    "Progress",
    "TrainingDataError",
    "check_table",
    "feature_matrix",
    "load_table",
    "manifest_hash",
    "patient_split",
]

Progress = Callable[[str], None]


class TrainingDataError(ValueError):
    """The feature table cannot be trained on; names the patient, field and rule."""

    def __init__(self, field: str, rule: str, patient_id: str | None = None, count: int = 1):
        self.field = field
        self.rule = rule
        self.patient_id = patient_id
        self.count = count
        who = f"patient {patient_id}: " if patient_id is not None else ""
        more = f" ({count} rows)" if count > 1 else ""
        super().__init__(f"{who}{field}: {rule}{more}")


SEX_CODES = {"female": 0, "male": 1}


def load_table(
    path: Path,
    fhir_index_date: str | None = None,
    lookback_days: int = LOOKBACK_DAYS,
    complete_conditions: bool = False,
) -> pd.DataFrame:
    """Read a C2 feature table from a CSV file or a FHIR Bulk NDJSON folder.

    The one input path (:func:`training.ncd_input.read_input`); any problem refuses.

    Raises:
        training.ncd_input.NcdInputError: problems found (see its report).
        training.fhir_bulk.FeatureTableError: the input cannot be read at all.
    """
    from datetime import date

    from training.ncd_input import read_input

    when = date.fromisoformat(fhir_index_date) if fhir_index_date else None
    table, _ = read_input(
        path, index_date=when, lookback_days=lookback_days,
        complete_conditions=complete_conditions,
    )  # fmt: skip
    table.attrs["synthetic_training_data"] = "training.synthetic_ncd" in _generator(path)
    return table


def _generator(path: Path) -> str:
    """The ``generator`` a FHIR folder's ``manifest.json`` names (synthetic_ncd writes one)."""
    manifest = path / "manifest.json"
    return manifest.read_text(encoding="utf-8") if path.is_dir() and manifest.is_file() else ""


def manifest_hash(table: pd.DataFrame) -> str:
    """sha256 of the table's content (row hashes in order), independent of the file format."""
    rows = pd.util.hash_pandas_object(table, index=False).to_numpy()
    digest = hashlib.sha256(rows.tobytes())
    digest.update(",".join(map(str, table.columns)).encode())
    return digest.hexdigest()


def check_table(table: pd.DataFrame, cfg: NcdTrainConfig, progress: Progress) -> pd.DataFrame:
    """Validate and filter the table for this config (see the module docstring).

    Raises:
        TrainingDataError: naming the first patient and field at fault.
    """
    from models.ncd_features import FEATURE_BY_NAME

    outcome_cols = [f"{cfg.outcome}_event", f"{cfg.outcome}_time"]
    for column in ["patient_id", "index_date", "sex", *cfg.features, *outcome_cols]:
        if column not in table.columns:
            raise TrainingDataError(column, "column missing from the feature table")
    try:
        from training.fhir_bulk import check_leakage

        leaks = check_leakage(table)
    except ImportError:  # pragma: no cover - fhir_bulk ships with training
        leaks = []
    if leaks:
        first = leaks[0]
        raise TrainingDataError(
            first.field, f"leakage: {first.rule}", first.patient_id, count=len(leaks)
        )
    negative = table[f"{cfg.outcome}_time"] < 0
    if negative.any():
        pid = str(table.loc[negative, "patient_id"].iloc[0])
        raise TrainingDataError(
            f"{cfg.outcome}_time",
            "leakage: outcome dated before the index date",
            pid,
            int(negative.sum()),
        )
    dup = table.duplicated(["patient_id", "index_date"], keep=False)
    if dup.any():
        pid = str(table.loc[dup, "patient_id"].iloc[0])
        raise TrainingDataError(
            "patient_id", "duplicate rows for one patient and index date", pid, int(dup.sum())
        )
    sex_ok = table["sex"].isin(list(SEX_CODES))
    if not sex_ok.all():
        pid = str(table.loc[~sex_ok, "patient_id"].iloc[0])
        raise TrainingDataError("sex", "must be 'female' or 'male'", pid, int((~sex_ok).sum()))
    for name in cfg.features:
        if name == "sex":
            continue
        spec = FEATURE_BY_NAME[name]
        values = pd.to_numeric(table[name], errors="coerce")
        nonnumeric = values.isna() & table[name].notna()
        low = -np.inf if spec.minimum is None else spec.minimum
        high = np.inf if spec.maximum is None else spec.maximum
        outside = values.notna() & ((values < low) | (values > high))
        for mask, rule in (
            (nonnumeric, f"must be a number in {spec.unit}"),
            (outside, f"must be {low:g}-{high:g} {spec.unit} (check the unit)"),
        ):
            if mask.any():
                pid = str(table.loc[mask, "patient_id"].iloc[0])
                raise TrainingDataError(name, rule, pid, int(mask.sum()))
    out = table
    if cfg.exclude_prevalent_diabetes:
        prevalent = out["diabetes"] == 1
        progress(f"excluded {int(prevalent.sum())} patients with diabetes at the index date")
        out = out[~prevalent]
    age_out = (out["age"] < cfg.min_age) | (out["age"] > cfg.max_age)
    if age_out.any():
        progress(
            f"excluded {int(age_out.sum())} patients outside ages {cfg.min_age:g}-{cfg.max_age:g}"
        )
        out = out[~age_out]
    not_at_risk = out[outcome_cols[0]].isna() & out[outcome_cols[1]].isna()
    if not_at_risk.any():
        progress(
            f"excluded {int(not_at_risk.sum())} patients not at risk of {cfg.outcome} "
            "(disease on or before the index date, or no follow-up)"
        )
        out = out[~not_at_risk]
    for column in outcome_cols:
        values = pd.to_numeric(out[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values)
        if column.endswith("_event"):
            bad |= ~values.isin([0, 1])
        if bad.any():
            pid = str(out.loc[bad, "patient_id"].iloc[0])
            rule = "must be 0 or 1" if column.endswith("_event") else "must be a number of years"
            raise TrainingDataError(column, rule, pid, int(bad.sum()))
    for name in cfg.required:
        missing = out[name].isna()
        if not missing.any():
            continue
        if not cfg.drop_incomplete:
            pid = str(out.loc[missing, "patient_id"].iloc[0])
            raise TrainingDataError(
                name,
                "required feature is missing (leave such rows out: drop_incomplete in the config, "
                "or tonle evaluate --drop-incomplete)",
                pid,
                int(missing.sum()),
            )
        progress(f"left out {int(missing.sum())} rows missing required feature {name}")
        out = out[~missing]
    if len(out) == 0:
        raise TrainingDataError(
            "patient_id", "no rows left (the input has none, or all were left out)"
        )
    return out.reset_index(drop=True)


def patient_split(patient_ids: pd.Series, seed: int, split: SplitConfig) -> npt.NDArray[np.int64]:
    """0 = train, 1 = validation, 2 = test, from a seeded hash of each patient id."""
    salted = patient_ids.astype(str) + f"|{seed}"
    u = pd.util.hash_pandas_object(salted, index=False).to_numpy() / float(2**64)
    return np.where(u < split.train, 0, np.where(u < split.train + split.validation, 1, 2))


def feature_matrix(table: pd.DataFrame, features: list[str]) -> npt.NDArray[np.float32]:
    """float32 ``[N, F]`` in the order of ``features`` (sex coded 0 = female, 1 = male)."""
    columns = []
    for name in features:
        if name == "sex":
            columns.append(table["sex"].map(SEX_CODES).to_numpy(dtype=np.float64))
        else:
            columns.append(pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64))
    return np.ascontiguousarray(np.column_stack(columns), dtype=np.float32)
