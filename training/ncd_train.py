"""Train, evaluate, export and register a 10-year NCD risk model (CVD or diabetes).

``tonle train cvd-risk`` / ``tonle train diabetes-risk`` run :func:`train` with
``configs/<name>.yaml`` on a feature table (contract C2): a CSV file, or a folder of
FHIR Bulk NDJSON that :func:`training.fhir_bulk.build_feature_table` turns into one.

Steps, each printed as it runs:

1. Check the table: required columns, no leakage (an outcome or measurement dated
   after the index date is refused), sex coded female/male, no duplicate
   patient-index rows, required features present and every value inside its valid
   range. Problems are errors naming the patient and field, never silent defaults.
2. Split by patient (a hash of ``patient_id`` and the seed), so one patient never
   sits in two splits.
3. Label "event within the horizon" with inverse-probability-of-censoring weights
   (Kaplan-Meier of censoring, :mod:`training.ncd_metrics`).
4. Fit each candidate (HistGradientBoosting; regularised logistic regression with
   the imputer and scaler *outside* the calibrator), each sigmoid-calibrated with
   cross-fitting, and keep the one with the lower IPCW Brier score on validation.
5. Evaluate on the test split next to the WHO 2019 chart, write the model card.
6. Export with skl2onnx, check parity on at least 10,000 real rows, save through the
   registry with full metadata.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from models.metadata import FeatureSpec, MetricValue, ModelMetadata, OutputSpec
from models.registry import StoredModel

__all__ = [
    "CalibrationConfig",
    "EvaluationConfig",
    "ExportConfig",
    "HgbConfig",
    "LogisticConfig",
    "NcdTrainConfig",
    "SplitConfig",
    "TrainResult",
    "TrainingDataError",
    "check_table",
    "load_table",
    "patient_split",
    "train",
]

Progress = Callable[[str], None]


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Cfg):
    """Patient-level split fractions (the rest is the test split)."""

    train: float = Field(default=0.7, gt=0, lt=1)
    validation: float = Field(default=0.15, gt=0, lt=1)


class HgbConfig(_Cfg):
    """HistGradientBoostingClassifier hyperparameters."""

    learning_rate: float = Field(default=0.06, gt=0)
    max_iter: int = Field(default=300, ge=1)
    max_leaf_nodes: int = Field(default=15, ge=2)
    min_samples_leaf: int = Field(default=50, ge=1)
    l2_regularization: float = Field(default=1.0, ge=0)
    early_stopping: bool = True
    monotonic: dict[str, Literal[-1, 0, 1]] = Field(
        default_factory=dict, description="feature -> +1 (risk never falls as it rises) / -1"
    )


class LogisticConfig(_Cfg):
    """Regularised (L2) logistic regression baseline."""

    C: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=500, ge=10)


class CalibrationConfig(_Cfg):
    """Post-hoc calibration; only sigmoid exports exactly (PERFORMANCE.md)."""

    method: Literal["sigmoid"] = "sigmoid"
    folds: int = Field(default=3, ge=2)


class EvaluationConfig(_Cfg):
    """Test-split evaluation."""

    bootstrap_reps: int = Field(default=200, ge=0)
    who_model: Literal["lab", "nonlab"] = "lab"
    who_missing_smoking_as_non_smoker: bool = False
    who_region: str | None = "A05GBDR_014_SEA"
    who_country: str | None = None


class ExportConfig(_Cfg):
    """ONNX parity check before saving."""

    parity_min_rows: int = Field(default=10_000, ge=1)
    parity_max_rows: int = Field(default=50_000, ge=1)


class NcdTrainConfig(_Cfg):
    """A training config (``configs/cvd-risk.yaml``, ``configs/diabetes-risk.yaml``)."""

    name: str
    version: str
    outcome: Literal["cvd", "diabetes"]
    description: str
    intended_use: str
    limitations: list[str] = Field(default_factory=list)
    horizon_years: float = Field(default=10.0, gt=0)
    seed: int = 0
    threads: int = Field(default=1, ge=1)
    features: list[str]
    required: list[str]
    exclude_prevalent_diabetes: bool = False
    drop_incomplete: bool = False
    min_age: float = 18.0
    max_age: float = 110.0
    reference: dict[str, float]
    labels: dict[str, str] = Field(default_factory=dict)
    candidates: list[Literal["hgb", "logistic"]] = ["hgb", "logistic"]
    split: SplitConfig = Field(default_factory=SplitConfig)
    hgb: HgbConfig = Field(default_factory=HgbConfig)
    logistic: LogisticConfig = Field(default_factory=LogisticConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)


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


class TrainResult(BaseModel):
    """What :func:`train` produced."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stored: Any
    chosen: str
    validation: dict[str, dict[str, float]]
    test_summary: dict[str, float | int | None]
    card_dir: Path
    seconds: float


SEX_CODES = {"female": 0, "male": 1}


def load_table(
    path: Path,
    fhir_index_date: str | None = None,
    lookback_days: int = 730,
    complete_conditions: bool = False,
) -> Any:
    """Read a C2 feature table: a CSV file, or build one from a FHIR Bulk NDJSON folder.

    ``complete_conditions`` tells the FHIR builder that the export holds every
    diagnosis (see :func:`training.fhir_bulk.build_feature_table`).
    """
    if path.is_dir():
        from datetime import date

        from training.fhir_bulk import build_feature_table

        if fhir_index_date is None:
            raise TrainingDataError("index_date", "give --index-date for FHIR Bulk NDJSON input")
        return build_feature_table(
            path,
            index_date=date.fromisoformat(fhir_index_date),
            lookback_days=lookback_days,
            complete_conditions=complete_conditions,
        )
    if not path.is_file():
        raise TrainingDataError("data", f"{path} is not a file or folder")
    table = pd.read_csv(path, dtype={"patient_id": str, "site": str, "sex": str})
    for column in table.columns:
        if column == "index_date" or column.endswith("_date"):
            table[column] = pd.to_datetime(table[column], errors="raise")
    return table


def _manifest_hash(table: pd.DataFrame) -> str:
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
                "required feature is missing (set drop_incomplete to leave such rows out)",
                pid,
                int(missing.sum()),
            )
        progress(f"left out {int(missing.sum())} rows missing required feature {name}")
        out = out[~missing]
    if len(out) == 0:
        raise TrainingDataError("patient_id", "no rows left to train on")
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


def _candidate(kind: str, cfg: NcdTrainConfig) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    folds = cfg.calibration.folds
    if kind == "hgb":
        unknown = sorted(set(cfg.hgb.monotonic) - set(cfg.features))
        if unknown:
            raise TrainingDataError("hgb.monotonic", f"names features not in the model: {unknown}")
        base = HistGradientBoostingClassifier(
            **cfg.hgb.model_dump(exclude={"monotonic"}),
            monotonic_cst=[cfg.hgb.monotonic.get(name, 0) for name in cfg.features],
            random_state=cfg.seed,
            validation_fraction=0.1,
        )
        return CalibratedClassifierCV(base, method="sigmoid", cv=folds, ensemble=False)
    # The scaler stays OUTSIDE the calibrator: skl2onnx exports a calibrated
    # scaler+logistic Pipeline wrongly (PERFORMANCE.md).
    logistic = LogisticRegression(C=cfg.logistic.C, max_iter=cfg.logistic.max_iter)
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("model", CalibratedClassifierCV(logistic, method="sigmoid", cv=folds, ensemble=False)),
        ]
    )


def _fit(kind: str, model: Any, x: npt.NDArray[np.float32], y: Any, w: Any) -> Any:
    if kind == "hgb":
        return model.fit(x, y, sample_weight=w)
    return model.fit(x, y, model__sample_weight=w)


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _feature_specs(cfg: NcdTrainConfig) -> list[FeatureSpec]:
    from models.ncd_features import FEATURE_BY_NAME

    specs = []
    for name in cfg.features:
        spec = FEATURE_BY_NAME[name]
        update: dict[str, Any] = {"required": name in cfg.required}
        if name == "age":
            update |= {"minimum": cfg.min_age, "maximum": cfg.max_age}
        specs.append(spec.model_copy(update=update))
    return specs


def train(
    cfg: NcdTrainConfig,
    table: pd.DataFrame,
    *,
    version: str | None = None,
    card_root: Path = Path("artifacts"),
    progress: Progress = print,
    estimator_path: Path | None = None,
) -> TrainResult:
    """Run the whole pipeline on ``table`` and save the artifact; see the module docstring.

    ``estimator_path``, when given, also receives the fitted scikit-learn estimator
    (joblib), for benchmarks and audits; serving never reads it.

    Raises:
        TrainingDataError: the table fails :func:`check_table`, or a split is empty.
        training.ncd_export.ExportError: the ONNX export is not faithful.
    """
    from threadpoolctl import threadpool_limits

    cfg = cfg.model_copy(update={"version": version}) if version else cfg
    with threadpool_limits(cfg.threads):
        return _train(cfg, table, card_root, progress, estimator_path)


def _train(
    cfg: NcdTrainConfig,
    table: pd.DataFrame,
    card_root: Path,
    progress: Progress,
    estimator_path: Path | None,
) -> TrainResult:
    from training import ncd_metrics
    from training.ncd_card import write_model_card
    from training.ncd_evaluate import evaluate_table, write_report
    from training.ncd_export import export_checked, save_proto

    started = time.perf_counter()
    progress(f"[1/6] checking {len(table)} rows for {cfg.name}:{cfg.version}")
    manifest = _manifest_hash(table)
    data = check_table(table, cfg, progress)
    split = patient_split(data["patient_id"], cfg.seed, cfg.split)
    counts = {name: int((split == k).sum()) for k, name in enumerate(["train", "val", "test"])}
    progress(f"[2/6] patient-level split {counts} (seed {cfg.seed})")
    if min(counts.values()) == 0:
        raise TrainingDataError("patient_id", f"a split is empty: {counts}; add more patients")
    x = feature_matrix(data, cfg.features)
    t = data[f"{cfg.outcome}_time"].to_numpy(dtype=np.float64)
    e = data[f"{cfg.outcome}_event"].to_numpy(dtype=np.float64) == 1.0
    h = cfg.horizon_years
    tr, va, te = (split == 0), (split == 1), (split == 2)
    censoring = ncd_metrics.censoring_survival(t[tr], e[tr])
    y_tr, w_tr = ncd_metrics.ipcw_labels(t[tr], e[tr], h, censoring)
    known = w_tr > 0
    progress(
        f"[3/6] IPCW labels at {h:g} years: {int(known.sum())} of {int(tr.sum())} training "
        f"patients with known status, {int(y_tr.sum())} events"
    )
    y_va, w_va = ncd_metrics.ipcw_labels(t[va], e[va], h)
    ones = np.ones((int(va.sum()), 1))
    fitted: dict[str, Any] = {}
    validation: dict[str, dict[str, float]] = {}
    for kind in cfg.candidates:
        t0 = time.perf_counter()
        model = _fit(kind, _candidate(kind, cfg), x[tr][known], y_tr[known], w_tr[known])
        p_va = np.asarray(model.predict_proba(x[va]), dtype=np.float64)[:, 1]
        validation[kind] = {
            "brier": float(ncd_metrics.brier(y_va, p_va, w_va, ones)[0]),
            "auroc": float(ncd_metrics.auroc(y_va, p_va, w_va, ones)[0]),
            "fit_seconds": time.perf_counter() - t0,
        }
        fitted[kind] = model
        progress(
            f"[4/6] {kind}: validation IPCW Brier {validation[kind]['brier']:.5f}, "
            f"AUROC {validation[kind]['auroc']:.4f} ({validation[kind]['fit_seconds']:.1f} s)"
        )
    chosen = min(validation, key=lambda k: validation[k]["brier"])
    model = fitted[chosen]
    progress(f"[4/6] chose {chosen} (lower validation Brier: a proper score for risk)")

    test_table = data[te].reset_index(drop=True)
    p_te = np.asarray(model.predict_proba(x[te]), dtype=np.float64)[:, 1]
    report = evaluate_table(
        test_table,
        p_te,
        cfg.outcome,
        horizon=h,
        bootstrap_reps=cfg.evaluation.bootstrap_reps,
        seed=cfg.seed,
        who_region=cfg.evaluation.who_region,
        who_country=cfg.evaluation.who_country,
        who_model=cfg.evaluation.who_model,
        who_missing_smoking_as_non_smoker=cfg.evaluation.who_missing_smoking_as_non_smoker,
    )
    card_dir = card_root / cfg.name / cfg.version
    write_report(report, card_dir, f"Test-split evaluation of {cfg.name}:{cfg.version}")
    summary = {
        "auroc": report.model_all_rows.auroc.value,
        "calibration_slope": report.model_all_rows.calibration_slope.value,
    }
    if report.overall.who is not None:
        summary |= {
            "compared_n": report.n_compared,
            "compared_auroc": report.overall.model.auroc.value,
            "who_auroc": report.overall.who.auroc.value,
        }
    progress(f"[5/6] test split: {summary}")

    # test_*: the model on every test row; compared_test_* / who_test_*: the model and
    # the WHO chart on the test rows where the chart gives a risk (same patients).
    metrics: dict[str, MetricValue] = {}
    sets = [("test_", report.model_all_rows)]
    if report.overall.who is not None:
        sets += [("compared_test_", report.overall.model), ("who_test_", report.overall.who)]
    for key in (
        "auroc",
        "harrell_c",
        "uno_c",
        "calibration_slope",
        "calibration_intercept",
        "brier",
        "ece",
    ):
        for prefix, metric_set in sets:
            value = getattr(metric_set, key)
            if value.value is not None:
                metrics[f"{prefix}{key}"] = MetricValue(
                    value=value.value, ci_low=value.ci_low, ci_high=value.ci_high, n=metric_set.n
                )
    rng = np.random.default_rng(cfg.seed)
    parity_rows = min(len(x), cfg.export.parity_max_rows)
    x_parity = x[rng.choice(len(x), parity_rows, replace=False)]
    metadata = ModelMetadata(
        name=cfg.name,
        version=cfg.version,
        task="ncd-risk",
        description=cfg.description,
        features=_feature_specs(cfg),
        outputs=[
            OutputSpec(
                name="probabilities",
                meaning=f"column 1: probability of {cfg.outcome} within {h:g} years",
                labels=["no event", f"{cfg.outcome} within {h:g} years"],
            )
        ],
        training_manifest_sha256=manifest,
        metrics=metrics,
        intended_use=cfg.intended_use,
        limitations=cfg.limitations,
        config=cfg.model_dump(mode="json"),
        code_version=_git_commit(),
        library_versions=_library_versions(),
        extra={
            "outcome": cfg.outcome,
            "horizon_years": h,
            "reference": {name: cfg.reference[name] for name in cfg.features},
            "labels": cfg.labels,
            "encodings": {"sex": SEX_CODES},
            "estimator": chosen,
            "validation": validation,
            "split_counts": counts,
            "censoring": "IPCW, Kaplan-Meier of censoring on the training split",
        },
    )
    progress(f"[6/6] exporting to ONNX; parity on {parity_rows} real rows")
    proto, metadata, parity = export_checked(
        model, x_parity, metadata, min_rows=cfg.export.parity_min_rows
    )
    write_model_card(metadata, report, card_dir)
    stored = save_proto(proto, metadata, card_dir)
    if estimator_path is not None:
        import joblib

        estimator_path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, estimator_path)
    progress(
        f"saved {stored.metadata.tag}: parity max |diff| {parity.max_abs_diff:.2e}, "
        f"{parity.band_mismatches} band mismatches; card in {card_dir}"
    )
    return TrainResult(
        stored=stored,
        chosen=chosen,
        validation=validation,
        test_summary=summary,
        card_dir=card_dir,
        seconds=time.perf_counter() - started,
    )


def stored_of(result: TrainResult) -> StoredModel:
    """The typed stored model of a result."""
    stored: StoredModel = result.stored
    return stored
