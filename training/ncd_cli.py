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

__all__ = ["register"]

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Feature table CSV (contract C2) or a folder of FHIR Bulk NDJSON.",
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


def _load(data: Path, index_date: str | None, lookback_days: int, complete: bool = False) -> Any:
    from cli.console import EXIT_BAD_INPUT, fail
    from training.fhir_bulk import FeatureTableError
    from training.ncd_table import TrainingDataError, load_table

    try:
        return load_table(data, index_date, lookback_days, complete)
    except (TrainingDataError, FeatureTableError, FileNotFoundError, ValueError) as exc:
        raise fail(f"cannot read {data}: {exc}", EXIT_BAD_INPUT) from exc


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
) -> None:
    from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT, EXIT_FAILED, console, fail, out
    from models.config import ConfigError, load_config
    from models.registry import ArtifactError
    from training.ncd_config import NcdTrainConfig
    from training.ncd_export import ExportError
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
        table = _load(data, index_date, lookback_days, complete)
        console.print(f"{time.perf_counter() - started:7.1f}s read {len(table)} rows from {data}")
        try:
            result = train(
                cfg,
                table,
                version=version,
                card_root=cards,
                estimator_path=save_sklearn,
                lookback_days=lookback_days if data.is_dir() else None,
                progress=lambda line: console.print(
                    f"{time.perf_counter() - started:7.1f}s {line}", highlight=False
                ),
            )
        except TrainingDataError as exc:
            raise fail(f"training data refused: {exc}", EXIT_BAD_INPUT) from exc
        except ExportError as exc:
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

    @app.command("evaluate")
    def evaluate(
        model: Annotated[str, typer.Argument(help="NAME:VERSION (or NAME for the latest).")],
        data: Annotated[Path, typer.Option("--data", help="Feature table CSV or NDJSON folder.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Report folder.")] = Path(
            "artifacts/evaluation"
        ),
        index_date: IndexDateOpt = None,
        lookback_days: LookbackOpt = LOOKBACK_DAYS,
        bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates for CIs.")] = 200,
        complete_conditions: CompleteOpt = False,
    ) -> None:
        """Evaluate a stored NCD model on a feature table, next to the WHO 2019 chart.

        Writes evaluation.md/json, calibration.png and decision_curve.png.

        Example: tonle evaluate cvd-risk:1.0.0 --data features.csv -o artifacts/eval
        """
        from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT, console, fail, out
        from models import registry
        from models.ncd_predictor import NcdPredictor
        from training.ncd_config import NcdTrainConfig
        from training.ncd_evaluate import evaluate_for_config
        from training.ncd_report import report_summary, write_report
        from training.ncd_table import TrainingDataError, check_table
        from training.ncd_table import feature_matrix as features_of

        name, _, version = model.partition(":")
        try:
            stored = registry.verify(name, version or "latest")
            predictor = NcdPredictor(stored, threads=0)
        except registry.ArtifactError as exc:
            raise fail(str(exc), EXIT_BAD_ARTIFACT) from exc
        try:
            cfg = NcdTrainConfig.model_validate(stored.metadata.config)
        except ValueError as exc:
            raise fail(
                f"{stored.metadata.tag} has no usable training config in its metadata "
                f"(was it built by tonle train?): {exc}",
                EXIT_BAD_ARTIFACT,
            ) from exc
        table = _load(data, index_date, lookback_days, complete_conditions)
        try:
            table = check_table(table, cfg, lambda line: console.print(line, highlight=False))
        except TrainingDataError as exc:
            raise fail(f"evaluation data refused: {exc}", EXIT_BAD_INPUT) from exc
        risk = predictor.predict_proba(features_of(table, predictor.feature_names))
        report = evaluate_for_config(table, risk.astype("float64"), cfg, bootstrap_reps=bootstrap)
        paths = write_report(report, output, f"Evaluation of {stored.metadata.tag} on {data.name}")
        out.print_json(data=report_summary(report))
        console.print("wrote " + ", ".join(str(p) for p in paths))
