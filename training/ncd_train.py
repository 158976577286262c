"""Train, evaluate, export and register a 10-year NCD risk model (CVD or diabetes).

``tonle train cvd-risk`` / ``tonle train diabetes-risk`` run :func:`train` with
``configs/<name>.yaml`` on a feature table (contract C2): a CSV file, or a folder of
FHIR Bulk NDJSON that :func:`training.fhir_bulk.build_feature_table` turns into one.

Steps, each printed as it runs:

1. Check the table (:func:`training.ncd_table.check_table`): required columns, no
   leakage (an outcome or measurement dated after the index date is refused), sex
   coded female/male, no duplicate patient-index rows, required features present and
   every value inside its valid range. Problems are errors naming the patient and
   field, never silent defaults.
2. Split by patient (a hash of ``patient_id`` and the seed), so one patient never
   sits in two splits.
3. Label "event within the horizon" with inverse-probability-of-censoring weights
   (Kaplan-Meier of censoring, :mod:`training.ncd_metrics`).
4. Fit each candidate (HistGradientBoosting; regularised logistic regression with
   the imputer and scaler *outside* the calibrator), each sigmoid-calibrated with
   cross-fitting, and keep the one with the lower IPCW Brier score on validation.
5. Evaluate on the test split next to the WHO 2019 chart, write the model card,
   with what a missing optional input is scored as (:mod:`training.ncd_missing`).
6. Export with skl2onnx, check parity on min(``export.parity_max_rows``, rows
   available) real rows (plus rows with each optional input missing), save through
   the registry with full metadata.

Gates (:mod:`training.ncd_gates`): before any fitting, the version must be free,
every input must have values, there must be enough events per input and enough
rows for the parity check; after fitting, a minimum test AUROC, and for CVD a model
not at least as good as the WHO chart on the same test patients is saved only with
``accept_worse_than_who`` (a reason, recorded in ``NcdDetails.who_comparison``).
"""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict

from models.details import NcdDetails
from models.metadata import FeatureSpec, MetricValue, ModelMetadata, OutputSpec
from models.ncd_support import InputSupport
from training.ncd_config import NcdTrainConfig
from training.ncd_missing import missing_inputs, with_missing_rows
from training.ncd_table import (
    SEX_CODES,
    Progress,
    TrainingDataError,
    check_table,
    feature_matrix,
    manifest_hash,
    patient_split,
)

__all__ = ["TrainResult", "train"]


class TrainResult(BaseModel):
    """What :func:`train` produced."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stored: Any
    chosen: str
    validation: dict[str, dict[str, float]]
    test_summary: dict[str, float | int | None]
    card_dir: Path
    seconds: float


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
    # scaler+logistic Pipeline wrongly (docs/performance.md).
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


def _interval(value: Any) -> str:
    if value.value is None:
        return "n/a"
    if value.ci_low is None:
        return f"{value.value:.3f}"
    return f"{value.value:.3f} ({value.ci_low:.3f} to {value.ci_high:.3f})"


def code_version() -> str:
    """The code revision: the git commit of this source tree, else the installed package.

    ``git rev-parse`` runs in the folder of this file (not the working directory), so
    a model trained from any folder records the commit of the code that trained it;
    outside a git checkout it is ``tonle <version> (installed package)``.
    """
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            check=False, cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"tonle {version('tonle')} (installed package)"
    except PackageNotFoundError:
        return "unknown (not a git checkout, no installed tonle package)"


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
    lookback_days: int | None = None,
    accept_worse_than_who: str | None = None,
) -> TrainResult:
    """Run the whole pipeline on ``table`` and save the artifact; see the module docstring.

    ``estimator_path``, when given, also receives the fitted scikit-learn estimator
    (joblib), for benchmarks and audits; serving never reads it. ``lookback_days`` is
    the look-back the table was built with (FHIR input), recorded in the metadata so
    serving can check its ``max_data_age_days`` against it; None when unknown (a
    ready-made feature table). ``accept_worse_than_who`` is the reason to save a CVD
    model that is not at least as good as the WHO chart.

    Raises:
        TrainingDataError: the table fails :func:`check_table`, a split is empty, or a
            check before fitting fails (:func:`training.ncd_gates.preflight`).
        training.ncd_gates.GateError: the fitted model fails a gate; nothing saved.
        training.ncd_export.ExportError: the ONNX export is not faithful.
    """
    from threadpoolctl import threadpool_limits

    cfg = cfg.model_copy(update={"version": version}) if version else cfg
    with threadpool_limits(cfg.threads):
        return _train(
            cfg, table, card_root.resolve(), progress, estimator_path, lookback_days,
            accept_worse_than_who,
        )  # fmt: skip


def _train(
    cfg: NcdTrainConfig,
    table: pd.DataFrame,
    card_root: Path,
    progress: Progress,
    estimator_path: Path | None,
    lookback_days: int | None,
    accept_worse_than_who: str | None,
) -> TrainResult:
    from training import ncd_gates, ncd_metrics
    from training.distribution import training_distribution
    from training.ncd_card import write_model_card
    from training.ncd_evaluate import evaluate_for_config
    from training.ncd_export import export_checked, save_proto
    from training.ncd_report import write_report

    started = time.perf_counter()
    progress(f"[1/6] checking {len(table)} rows for {cfg.name}:{cfg.version}")
    manifest = manifest_hash(table)
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
    for line in ncd_gates.preflight(cfg, x[tr], int(y_tr.sum()), len(x)):
        progress(f"[3/6] pre-flight: {line}")
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
    report = evaluate_for_config(test_table, p_te, cfg)
    ncd_gates.check_test_auroc(cfg, report.model_all_rows.auroc.value)
    comparison = ncd_gates.compare_with_who(test_table, p_te, cfg)
    if comparison is not None:
        progress(
            f"[5/6] against the {comparison.chart}: AUROC difference "
            f"{_interval(comparison.auroc_difference)}, slope "
            f"{_interval(comparison.calibration_slope_model)}, observed/expected "
            f"{_interval(comparison.observed_expected_model)}: "
            + ("at least as good" if comparison.at_least_as_good else "NOT at least as good")
        )
        if not comparison.at_least_as_good:
            if not accept_worse_than_who:
                raise ncd_gates.GateError(
                    f"{cfg.name}:{cfg.version} is not at least as good as the "
                    f"{comparison.chart} on the same {comparison.n} test patients "
                    f"({comparison.rule}); not saved. Save it anyway only with "
                    '--accept-worse-than-who "REASON"'
                )
            comparison = comparison.model_copy(update={"accepted_reason": accept_worse_than_who})
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
        "observed_expected",
    ):
        for prefix, metric_set in sets:
            value = getattr(metric_set, key)
            if value is not None and value.value is not None:
                metrics[f"{prefix}{key}"] = MetricValue(
                    value=value.value, ci_low=value.ci_low, ci_high=value.ci_high, n=metric_set.n
                )
    specs = _feature_specs(cfg)
    # What "not recorded" becomes inside this model (shown on every card), measured.
    missing = missing_inputs(model, x[tr][known], specs)
    rng = np.random.default_rng(cfg.seed)
    parity_rows = min(len(x), cfg.export.parity_max_rows)  # at least the floor: preflight
    x_parity = with_missing_rows(x[rng.choice(len(x), parity_rows, replace=False)], specs)
    metadata = ModelMetadata(
        name=cfg.name,
        version=cfg.version,
        task="ncd-risk",
        description=cfg.description,
        features=specs,
        outputs=[
            OutputSpec(
                name="probabilities",
                meaning=f"column 1: probability of {cfg.outcome} within {h:g} years",
                labels=["no event", f"{cfg.outcome} within {h:g} years"],
            )
        ],
        training_manifest_sha256=manifest,
        metrics=metrics,
        lookback_days=lookback_days,
        intended_use=cfg.intended_use,
        limitations=cfg.limitations,
        config=cfg.model_dump(mode="json"),
        code_version=code_version(),
        library_versions=_library_versions(),
        extra=NcdDetails(
            synthetic_training_data=bool(table.attrs.get("synthetic_training_data")),
            outcome=cfg.outcome,
            horizon_years=h,
            reference={name: cfg.reference[name] for name in cfg.features},
            labels=cfg.labels,
            encodings={"sex": dict(SEX_CODES)},
            estimator=chosen,
            validation={kind: {**scores} for kind, scores in validation.items()},
            split_counts=counts,
            censoring="IPCW, Kaplan-Meier of censoring on the training split",
            missing_inputs=missing,
            training_distribution=training_distribution(x[tr], [s.name for s in specs]),
            input_support=InputSupport.of_rows(x[tr], specs),
            who_comparison=comparison,
            card_dir=str(card_dir),
        ),
    )
    progress(
        f"[6/6] exporting to ONNX; parity on {parity_rows} real rows "
        f"and {len(x_parity) - parity_rows} with an optional input missing"
    )
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
