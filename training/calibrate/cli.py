"""``tonle calibrate``: a site proves a model on its own patients before go-live.

Registered on the main app by :func:`register` (one line in the CLI root). Heavy
imports stay inside the commands so ``tonle --help`` stays fast.

Exit codes: 0 done; 1 the study was computed but no threshold meets the rule;
2 usage (bad option); 3 the model artifact is missing or fails verification;
4 the study file is invalid (the message names the row and field).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

if TYPE_CHECKING:
    import numpy as np

    from models.registry import StoredModel
    from training.calibrate.study import Study

__all__ = ["calibrate_app", "register"]

RuleKind = Literal["min-sensitivity", "budget"]

RECORD_FILE = "site-threshold.json"


calibrate_app = typer.Typer(
    help="Local calibration: choose a site's thresholds on its own patients.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``calibrate`` command group (``cxr``, ``ncd``) to ``app``."""
    app.add_typer(calibrate_app, name="calibrate")


@calibrate_app.command("cxr")
def cxr(
    study_file: Annotated[
        Path, typer.Argument(metavar="STUDY.csv", help="One row per person screened.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    thresholds: Annotated[
        str | None,
        typer.Option(help="Comma-separated thresholds in [0, 1] (default 0.00, 0.01, ... 1.00)."),
    ] = None,
    cost_per_test: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Cost of one confirmatory test, in any currency (a test_cost column wins); "
            "unset: cost columns empty.",
        ),
    ] = None,
    sampling_fraction: Annotated[
        str | None,
        typer.Option(
            help="Verification sampling by score band, LOWER:FRACTION,..., e.g. "
            "'0:0.1,0.4:1' (10 % of scores below 0.4 tested, all above): corrects "
            "verification bias by inverse-probability weighting."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="NAME:VERSION of the pinned cxr model: scores an 'image' column, and is "
            "named in the site threshold record."
        ),
    ] = None,
    label: Annotated[
        str,
        typer.Option(help="The finding whose score is used (a model output, e.g. tb or abnormal)."),
    ] = "tb",
    min_sensitivity: Annotated[
        float | None,
        typer.Option(
            help="Choose the highest threshold whose sensitivity lower 95 % bound >= this (0-1)."
        ),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            help="Choose the highest yield whose testing cost per 1,000 screened <= this "
            "(currency of --cost-per-test)."
        ),
    ] = None,
    site: Annotated[str | None, typer.Option(help="Site id the threshold is for.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who chooses the threshold.")] = None,
) -> None:
    """Compute sensitivity, specificity, PPV, NPV, yield and cost at each threshold.

    Writes OUTDIR/thresholds.csv, thresholds_by_stratum.csv, roc.png, yield_cost.png and
    report.html; with --min-sensitivity or --budget also OUTDIR/site-threshold.json,
    the record serving loads (imaging.sites in the serving config).

    Example: tonle calibrate cxr study.csv -o calib --cost-per-test 15
    --model cxr-triage:1.0.0 --min-sensitivity 0.9 --site kampong-cham --by "Dr Sok"
    """
    from cli.console import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_USAGE, console, fail, out
    from training.calibrate.choose import NoThreshold, choose, make_record
    from training.calibrate.cxr import (
        calibrate,
        default_thresholds,
        parse_sampling_fractions,
        parse_thresholds,
    )
    from training.calibrate.report import write_outputs
    from training.calibrate.study import StudyError, read_study

    started = time.perf_counter()
    rule = _rule(min_sensitivity, budget)
    if rule is not None and (site is None or by is None or model is None):
        raise fail("choosing a threshold needs --site, --by and --model", EXIT_USAGE)
    try:
        grid = default_thresholds() if thresholds is None else parse_thresholds(thresholds)
        bands = None if sampling_fraction is None else parse_sampling_fractions(sampling_fraction)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    stored = None if model is None else _artifact(model)
    if stored is not None:
        meta = stored.metadata
        if meta.task != "cxr-triage" or label not in meta.cxr.labels:
            raise fail(
                f"{stored.metadata.tag} is not a cxr-triage model with output {label!r}",
                EXIT_USAGE,
            )
    try:
        study = read_study(study_file)
        if study.image is not None:
            if stored is None:
                raise fail("the study has an 'image' column: give --model NAME:VERSION", EXIT_USAGE)
            study = study.with_scores(_score(study, stored, label))
        calibration = calibrate(study, grid, cost_per_test=cost_per_test, bands=bands)
    except StudyError as exc:
        raise fail(f"{study_file}: {exc}", EXIT_BAD_INPUT) from None
    record = None
    failure = None
    if rule is not None and stored is not None and site and by:
        from models.site_threshold import RecordModel

        meta = stored.metadata
        try:
            index, chosen_rule = choose(calibration, *rule)
            record = make_record(
                calibration,
                index,
                chosen_rule,
                site=site,
                model=RecordModel(name=meta.name, version=meta.version, sha256=meta.sha256),
                label=label,
                chosen_by=by,
            )
        except NoThreshold as exc:
            failure = str(exc)
    written = write_outputs(calibration, out_dir, record)
    (out_dir / RECORD_FILE).unlink(missing_ok=True)  # never leave an earlier run's record
    if record is not None:
        path = out_dir / RECORD_FILE
        path.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
        written.append(path)
    if calibration.bias:
        console.print(f"[bold yellow]warning:[/] {calibration.bias}", highlight=False)
    for path in written:
        out.print(f"wrote {path}", highlight=False)
    console.print(f"{study.screened} people in {time.perf_counter() - started:.2f} s")
    if failure is not None:
        raise fail(failure, EXIT_FAILED)
    if record is not None:
        out.print(f"threshold {record.threshold:g}: {record.rule.text}", highlight=False)


def _rule(min_sensitivity: float | None, budget: float | None) -> tuple[RuleKind, float] | None:
    from cli.console import EXIT_USAGE, fail

    if min_sensitivity is not None and budget is not None:
        raise fail("give --min-sensitivity or --budget, not both", EXIT_USAGE)
    if min_sensitivity is not None:
        return ("min-sensitivity", min_sensitivity)
    if budget is not None:
        return ("budget", budget)
    return None


def _artifact(tag: str) -> StoredModel:
    from cli.console import EXIT_BAD_ARTIFACT, EXIT_USAGE, fail
    from models import registry

    name, sep, version = tag.partition(":")
    if not sep or not version or version == "latest":
        raise fail(f"--model {tag!r}: give NAME:VERSION with an exact version", EXIT_USAGE)
    try:
        return registry.verify(name, version)
    except registry.ArtifactError as exc:
        raise fail(str(exc), EXIT_BAD_ARTIFACT) from None


def _score(study: Study, stored: StoredModel, label: str) -> np.ndarray:
    from rich.progress import Progress

    from cli.console import console
    from training.calibrate.images import score_images

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scoring images", total=study.screened)
        return score_images(
            study, stored, label, progress=lambda done: progress.update(task, completed=done)
        )


@calibrate_app.command("ncd")
def ncd(
    model: Annotated[str, typer.Argument(help="NAME:VERSION of a stored NCD risk model.")],
    data: Annotated[
        Path, typer.Argument(metavar="FILE", help="Local cohort: feature table CSV or NDJSON.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    index_date: Annotated[
        str | None, typer.Option(help="Index date (YYYY-MM-DD) when FILE is FHIR Bulk NDJSON.")
    ] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap replicates for CIs.")] = 200,
    save_recalibrated: Annotated[
        str | None,
        typer.Option(
            metavar="VERSION",
            help="Also refit intercept and slope on this cohort (tonle recalibrate) and save "
            "the result as VERSION; its tables go to OUTDIR/recalibrated/.",
        ),
    ] = None,
    cards: Annotated[
        Path, typer.Option(help="Where the recalibrated model's card is written.")
    ] = Path("artifacts"),
) -> None:
    """Calibration by decile of predicted risk and observed/expected on a local cohort.

    Writes OUTDIR/calibration_deciles.csv, calibration.png and report.html.

    Example: tonle calibrate ncd cvd-risk:1.0.0 cohort.csv -o calib-ncd
    --save-recalibrated 1.0.1
    """
    import numpy as np

    from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT, console, fail, out
    from models.ncd_predictor import NcdPredictor
    from training.calibrate.ncd import calibrate_ncd, write_ncd_outputs
    from training.fhir_bulk import FeatureTableError
    from training.ncd_config import NcdTrainConfig
    from training.ncd_table import TrainingDataError, check_table, feature_matrix, load_table

    stored = _artifact(model)
    try:
        cfg = NcdTrainConfig.model_validate(stored.metadata.config)
    except ValueError as exc:
        raise fail(
            f"{stored.metadata.tag} has no usable training config (was it built by tonle "
            f"train?): {exc}",
            EXIT_BAD_ARTIFACT,
        ) from None
    try:
        table = load_table(data, index_date)
        table = check_table(table, cfg, lambda line: console.print(line, highlight=False))
        time_ = table[f"{cfg.outcome}_time"].to_numpy(dtype=np.float64)
        event = table[f"{cfg.outcome}_event"].to_numpy(dtype=np.float64) == 1.0
        predictor = NcdPredictor(stored, threads=0)
        risk = predictor.predict_proba(feature_matrix(table, predictor.feature_names))
        result = calibrate_ncd(
            time_, event, risk.astype(np.float64), horizon=cfg.horizon_years,
            bootstrap_reps=bootstrap, seed=cfg.seed,
        )  # fmt: skip
    except (TrainingDataError, FeatureTableError, FileNotFoundError, ValueError) as exc:
        raise fail(f"cannot use {data}: {exc}", EXIT_BAD_INPUT) from None
    paths = write_ncd_outputs(
        result, out_dir, f"Calibration of {stored.metadata.tag} on {data.name}"
    )
    o = result.overall
    out.print(
        f"O/E {o['o_e']:.3f} (95 % CI {o['o_e_ci_low']:.3f}-{o['o_e_ci_high']:.3f}), "
        f"slope {o['slope']:.3f}, {result.n} patients",
        highlight=False,
    )
    for path in paths:
        out.print(f"wrote {path}", highlight=False)
    if save_recalibrated is not None:
        from models import registry
        from training.ncd_recalibrate import RecalibrationError, recalibrate

        try:
            saved, _ = recalibrate(stored, table, save_recalibrated, cards, bootstrap)
        except RecalibrationError as exc:
            raise fail(f"cannot recalibrate on {data}: {exc}", EXIT_BAD_INPUT) from None
        except registry.ArtifactError as exc:
            raise fail(str(exc), EXIT_BAD_ARTIFACT) from None
        new_risk = NcdPredictor(saved, threads=0).predict_proba(
            feature_matrix(table, predictor.feature_names)
        )
        after = calibrate_ncd(
            time_, event, new_risk.astype(np.float64), horizon=cfg.horizon_years,
            bootstrap_reps=bootstrap, seed=cfg.seed,
        )  # fmt: skip
        write_ncd_outputs(
            after, out_dir / "recalibrated",
            f"Calibration of {saved.metadata.tag} (recalibrated, in sample) on {data.name}",
        )  # fmt: skip
        out.print(
            f"saved {saved.metadata.tag} (parent {stored.metadata.tag}): O/E in sample "
            f"{after.overall['o_e']:.3f}, slope {after.overall['slope']:.3f}",
            highlight=False,
        )
