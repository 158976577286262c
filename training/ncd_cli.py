"""``tonle train cvd-risk``, ``tonle train diabetes-risk`` and ``tonle evaluate``.

Registered on the main app by :func:`register` (one line in :mod:`cli.training`).
Heavy imports stay inside the command functions so ``tonle --help`` is fast.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from models.ncd_lookback import LOOKBACK_DAYS
from training.ncd_data_cli import SkipInvalidOpt

__all__ = ["register"]

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Flat CSV (columns in training/csv_adapter.py) or a folder of FHIR Bulk NDJSON.",
    ),
]
IndexDateOpt = Annotated[
    str | None,
    typer.Option(help="Index date (YYYY-MM-DD) when --data is FHIR Bulk NDJSON."),
]
SaveSklearnOpt = Annotated[
    Path | None,
    typer.Option(help="Also write the fitted scikit-learn estimator (joblib) here."),
]
LookbackOpt = Annotated[
    int,
    typer.Option(
        help="FHIR input: how old a measurement may be (days before the index date); "
        "recorded in the model, and serving's max_data_age_days may not exceed it.",
    ),
]
CompleteOpt = Annotated[
    bool,
    typer.Option(
        "--complete-conditions",
        help="The FHIR export holds every diagnosis (absence of diabetes means none).",
    ),
]


def _load(
    data: Path,
    index_date: str | None,
    lookback_days: int,
    complete: bool = False,
    skip_invalid: bool = False,
) -> Any:
    """The one NCD input path (:mod:`training.ncd_input`), its report on the console."""
    from datetime import date

    from cli.console import console, fail
    from training.fhir_bulk import FeatureTableError
    from training.ncd_data_cli import input_refused
    from training.ncd_input import read_input

    try:
        when = date.fromisoformat(index_date) if index_date else None
    except ValueError as exc:
        raise fail(f"--index-date {index_date!r} is not an ISO date (YYYY-MM-DD)", 2) from exc
    try:
        table, report = read_input(
            data, index_date=when, lookback_days=lookback_days, complete_conditions=complete,
            skip_invalid=skip_invalid,
        )  # fmt: skip
    except FeatureTableError as exc:
        raise input_refused(data, exc) from exc
    if report.problems:
        for line in report.lines()[1:]:
            console.print(f"skipped: {line}", highlight=False, markup=False, soft_wrap=True)
    return table


def _train(
    name: str,
    data: Path | None,
    config: Path | None,
    version: str | None,
    index_date: str | None,
    lookback_days: int,
    synthetic: int | None,
    seed: int,
    cards: Path,
    save_sklearn: Path | None = None,
    complete: bool = False,
    skip_invalid: bool = False,
    accept_worse_than_who: str | None = None,
) -> None:
    from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT, EXIT_FAILED, console, fail, out
    from models.config import ConfigError, load_config
    from models.registry import ArtifactError
    from training.ncd_config import NcdTrainConfig
    from training.ncd_export import ExportError
    from training.ncd_gates import GateError
    from training.ncd_table import TrainingDataError
    from training.ncd_train import train

    try:
        cfg = load_config(config or Path("configs") / f"{name}.yaml", NcdTrainConfig)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from exc
    if (data is None) == (synthetic is None):
        raise fail("give exactly one of --data PATH or --synthetic N", 2)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if synthetic is not None:
            from training.synthetic_ncd import INDEX_DATE, generate

            console.print(f"generating {synthetic} synthetic patients (seed {seed})")
            data = generate(Path(tmp) / "ndjson", synthetic, seed)
            index_date = INDEX_DATE.isoformat()
        assert data is not None
        table = _load(data, index_date, lookback_days, complete, skip_invalid)
        console.print(f"{time.perf_counter() - started:7.1f}s read {len(table)} rows from {data}")
        try:
            result = train(
                cfg,
                table,
                version=version,
                card_root=cards,
                estimator_path=save_sklearn,
                lookback_days=lookback_days if data.is_dir() else None,
                accept_worse_than_who=accept_worse_than_who,
                progress=lambda line: console.print(
                    f"{time.perf_counter() - started:7.1f}s {line}", highlight=False
                ),
            )
        except TrainingDataError as exc:
            raise fail(f"training data refused: {exc}", EXIT_BAD_INPUT) from exc
        except (ExportError, GateError) as exc:
            raise fail(str(exc), EXIT_FAILED) from exc
        except ArtifactError as exc:
            raise fail(str(exc), EXIT_BAD_ARTIFACT) from exc
    out.print(
        f"{result.stored.metadata.tag} saved ({result.chosen}); test {result.test_summary}; "
        f"{result.seconds:.1f} s"
    )


def _add_train_command(train_app: typer.Typer, name: str, help_text: str) -> None:
    """``tonle train NAME``: the same options for every NCD model, its own config."""

    @train_app.command(name, help=help_text)
    def train(
        data: DataOpt = None,
        config: Annotated[
            Path | None, typer.Option(help="Training YAML; default configs/<model>.yaml.")
        ] = None,
        version: Annotated[str | None, typer.Option(help="Override the config's version.")] = None,
        index_date: IndexDateOpt = None,
        lookback_days: LookbackOpt = LOOKBACK_DAYS,
        synthetic: Annotated[
            int | None, typer.Option(help="Train on N synthetic patients instead of --data.")
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed for --synthetic.")] = 1,
        cards: Annotated[Path, typer.Option(help="Where model cards are written.")] = Path(
            "artifacts"
        ),
        save_sklearn: SaveSklearnOpt = None,
        complete_conditions: CompleteOpt = False,
        skip_invalid: SkipInvalidOpt = False,
        accept_worse_than_who: Annotated[
            str | None,
            typer.Option(
                metavar="REASON",
                help="Save a CVD model that is not at least as good as the WHO chart on the "
                "same test patients; the reason is recorded (serving then shows the chart).",
            ),
        ] = None,
    ) -> None:
        _train(
            name,
            data,
            config,
            version,
            index_date,
            lookback_days,
            synthetic,
            seed,
            cards,
            save_sklearn,
            complete_conditions,
            skip_invalid,
            accept_worse_than_who,
        )


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add the NCD commands to the ``tonle`` app."""

    _add_train_command(
        train_app,
        "cvd-risk",
        "Train, evaluate (vs the WHO 2019 chart), export and register the CVD model.\n\n"
        "Example: tonle train cvd-risk --data export/ --index-date 2016-01-01",
    )
    _add_train_command(
        train_app,
        "diabetes-risk",
        "Train, evaluate, export and register the incident-diabetes model.\n\n"
        "Example: tonle train diabetes-risk --data features.csv",
    )

    app.command("evaluate")(evaluate)
    app.command("recalibrate")(recalibrate)


def recalibrate(
    model: Annotated[str, typer.Argument(help="A stored NAME:VERSION (or NAME for the latest).")],
    data: Annotated[
        Path,
        typer.Option("--data", help="Local cohort: CSV (documented columns) or NDJSON folder."),
    ],
    version: Annotated[
        str, typer.Option(help="Version to save the recalibrated model as (e.g. 1.0.1).")
    ],
    cards: Annotated[Path, typer.Option(help="Where model cards are written.")] = Path("artifacts"),
    drop_incomplete: Annotated[
        bool, typer.Option("--drop-incomplete", help="Leave out rows missing a required input.")
    ] = False,
    index_date: IndexDateOpt = None,
    lookback_days: LookbackOpt = LOOKBACK_DAYS,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap replicates for CIs.")] = 200,
    complete_conditions: CompleteOpt = False,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Refit a stored model's intercept and slope on local data; save it as a new version.

    The new version names the old one as its parent. Use it when a model ranks patients
    well but is miscalibrated locally; validate it with tonle evaluate on other local
    patients before use (until then serving shows the WHO chart, not its number).

    Example: tonle recalibrate cvd-risk:1.0.0 --data local.csv --version 1.0.1
    """
    from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT, console, fail, out
    from models import registry
    from training.ncd_config import NcdTrainConfig
    from training.ncd_recalibrate import RecalibrationError
    from training.ncd_recalibrate import recalibrate as run
    from training.ncd_table import TrainingDataError, check_table

    name, _, parent_version = model.partition(":")
    try:
        stored = registry.verify(name, parent_version or "latest")
        cfg = NcdTrainConfig.model_validate(stored.metadata.config)
    except (registry.ArtifactError, ValueError) as exc:
        raise fail(f"{model}: {exc}", EXIT_BAD_ARTIFACT) from exc
    if any(meta.version == version for meta in registry.list_models(name)):
        raise fail(f"{name}:{version} is already in the model store; give another --version", 2)
    table = _load(data, index_date, lookback_days, complete_conditions, skip_invalid)
    try:
        cfg = cfg.model_copy(update={"drop_incomplete": drop_incomplete})
        table = check_table(table, cfg, lambda line: console.print(line, highlight=False))
        saved, record = run(stored, table, version, cards, bootstrap)
    except (TrainingDataError, RecalibrationError) as exc:
        raise fail(f"cannot recalibrate on {data}: {exc}", EXIT_BAD_INPUT) from exc
    except registry.ArtifactError as exc:
        raise fail(str(exc), EXIT_BAD_ARTIFACT) from exc
    before, after = record.before.observed_expected, record.after_in_sample.observed_expected
    out.print(
        f"{saved.metadata.tag} saved (parent {stored.metadata.tag}): intercept "
        f"{record.intercept:.3f}, slope {record.slope:.3f}; observed/expected "
        f"{'n/a' if before is None else f'{before:.2f}'} -> "
        f"{'n/a' if after is None else f'{after:.2f}'} (in sample)"
    )


WHO_MODELS = ("who-cvd-lab", "who-cvd-nonlab")


def _who_config(model: str, missing_smoking_as_non_smoker: bool) -> Any:
    """A config that evaluates the WHO chart itself: its inputs, its age range (40-74)."""
    from training.ncd_config import NcdTrainConfig

    lab = model == "who-cvd-lab"
    features = ["sex", "age", "smoking", "sbp", *(["total_chol", "diabetes"] if lab else ["bmi"])]
    required = [f for f in features if not (missing_smoking_as_non_smoker and f == "smoking")]
    return NcdTrainConfig(
        name=model, version="2019", outcome="cvd", description="WHO 2019 CVD risk chart",
        intended_use="external validation", features=features, required=required,
        min_age=40, max_age=74.99, reference={}, candidates=["logistic"],
    )  # fmt: skip


def evaluate(
    model: Annotated[
        str,
        typer.Argument(help="A stored NAME[:VERSION], or who-cvd-lab / who-cvd-nonlab."),
    ],
    data: Annotated[
        Path, typer.Option("--data", help="Cohort: CSV (documented columns) or NDJSON folder.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder.")] = Path(
        "artifacts/evaluation"
    ),
    region: Annotated[
        str | None, typer.Option(help="WHO chart region (code or name; see tonle who regions).")
    ] = None,
    country: Annotated[
        str | None, typer.Option(help="WHO chart country, ISO alpha-3 (e.g. KHM).")
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="'all' rows, or 'test': only the patients in the stored model's own test "
            "split (same seeded hash of patient_id as training)."
        ),
    ] = "all",
    drop_incomplete: Annotated[
        bool,
        typer.Option(
            "--drop-incomplete", help="Leave out (and count) rows missing a required input."
        ),
    ] = False,
    missing_smoking_as_non_smoker: Annotated[
        bool,
        typer.Option(
            "--missing-smoking-as-non-smoker",
            help="Score the WHO chart for rows without smoking as non-smokers (stated).",
        ),
    ] = False,
    index_date: IndexDateOpt = None,
    lookback_days: LookbackOpt = LOOKBACK_DAYS,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap replicates for CIs.")] = 200,
    complete_conditions: CompleteOpt = False,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Validate a stored NCD model, or the WHO 2019 chart itself, on any cohort.

    Discrimination, calibration (slope, intercept, observed/expected, by decile against
    Kaplan-Meier observed risk), decision curve, subgroups (sex, age band, site), next
    to the WHO chart on the same patients. Writes evaluation.html (plots embedded),
    evaluation.json, evaluation.md, calibration.png and decision_curve.png.

    Examples:
      tonle evaluate cvd-risk:1.0.0 --data cohort.csv --country KHM -o eval/
      tonle evaluate who-cvd-nonlab --data export/ --index-date 2016-01-01 --region "Southeast Asia"
    """
    import numpy as np

    from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT, console, fail, out
    from models import registry
    from models.who_cvd import WhoCvdInputError, resolve_recalibration
    from training.ncd_config import NcdTrainConfig
    from training.ncd_evaluate import evaluate_for_config, who_risk_for_table
    from training.ncd_report import report_summary, write_report
    from training.ncd_table import TrainingDataError, check_table, patient_split
    from training.ncd_table import feature_matrix as features_of

    if split not in ("all", "test"):
        raise fail(f"--split must be 'all' or 'test', not {split!r}", 2)
    who_model = model in WHO_MODELS
    if who_model and split == "test":
        raise fail("--split test needs a stored model (the WHO chart has no test split)", 2)
    if region is not None or country is not None:
        try:
            region_code, _, _ = resolve_recalibration(region, country)
        except WhoCvdInputError as exc:
            raise fail(f"{exc} (tonle who regions lists the codes)", 2) from exc
    predictor = None
    if who_model:
        cfg = _who_config(model, missing_smoking_as_non_smoker)
        title = f"External validation of the WHO 2019 chart ({model}) on {data.name}"
    else:
        from models.ncd_predictor import NcdPredictor

        name, _, version = model.partition(":")
        try:
            stored = registry.verify(name, version or "latest")
            predictor = NcdPredictor(stored, threads=0)
        except registry.ArtifactError as exc:
            hint = "" if version else " (the WHO charts are who-cvd-lab and who-cvd-nonlab)"
            raise fail(f"{exc}{hint}", EXIT_BAD_ARTIFACT) from exc
        try:
            cfg = NcdTrainConfig.model_validate(stored.metadata.config)
        except ValueError as exc:
            raise fail(
                f"{stored.metadata.tag} has no usable training config in its metadata "
                f"(was it built by tonle train?): {exc}",
                EXIT_BAD_ARTIFACT,
            ) from exc
        title = f"Evaluation of {stored.metadata.tag} on {data.name}"
    ev = cfg.evaluation.model_copy(
        update={"who_missing_smoking_as_non_smoker": missing_smoking_as_non_smoker}
        | ({"who_model": model.removeprefix("who-cvd-")} if who_model else {})
        | (
            {"who_region": region_code, "who_country": country}
            if region is not None or country is not None
            else {}
        )
    )
    cfg = cfg.model_copy(update={"evaluation": ev, "drop_incomplete": drop_incomplete})
    table = _load(data, index_date, lookback_days, complete_conditions, skip_invalid)
    if split == "test":
        table = table[patient_split(table["patient_id"], cfg.seed, cfg.split) == 2]
        console.print(f"kept {len(table)} rows in the model's test split (seed {cfg.seed})")
    try:
        table = check_table(table, cfg, lambda line: console.print(line, highlight=False))
    except TrainingDataError as exc:
        raise fail(f"evaluation data refused: {exc}", EXIT_BAD_INPUT) from exc
    if who_model:
        risk, _ = who_risk_for_table(
            table, ev.who_region, ev.who_country, ev.who_model, missing_smoking_as_non_smoker
        )
        scored = np.isfinite(risk)
        if not scored.all():
            console.print(f"left out {int((~scored).sum())} rows the chart gives no risk for")
        table, risk = table[scored].reset_index(drop=True), risk[scored]
    else:
        assert predictor is not None
        risk = predictor.predict_proba(features_of(table, predictor.feature_names))
    if len(table) == 0:
        raise fail("no rows left to evaluate", EXIT_BAD_INPUT)
    report = evaluate_for_config(
        table, risk.astype("float64"), cfg, bootstrap_reps=bootstrap,
        compare_who=not who_model,
        model_label=f"WHO 2019 {ev.who_model} chart" if who_model else "trained model",
    )  # fmt: skip
    paths = write_report(report, output, title)
    out.print_json(data=report_summary(report))
    console.print("wrote " + ", ".join(str(p) for p in paths))
