"""Chest X-ray commands: ``tonle train cxr`` and the ``cxr-triage`` branch of
``tonle evaluate``.

Heavy imports (torch, MONAI) stay inside the commands so ``tonle --help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

if TYPE_CHECKING:
    from models.registry import StoredModel
    from training.cxr_train import CxrTrainConfig

__all__ = [
    "evaluate_cxr",
    "import_cxr_command",
    "register",
    "train_cxr_command",
    "train_with_progress",
]

EXIT_FAILED = 1
EXIT_BAD_ARTIFACT = 3
EXIT_BAD_INPUT = 4

console = Console(stderr=True)
out = Console()


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def train_with_progress(cfg: CxrTrainConfig, *, resume: bool = False) -> StoredModel | None:
    """Run :func:`training.cxr_train.train_cxr` with rich progress bars on stderr."""
    from training.cxr_train import train_cxr

    tasks: dict[str, TaskID] = {}
    with _progress_bar() as bar:

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return train_cxr(cfg, resume=resume, progress=report)


def train_cxr_command(
    config: Annotated[Path, typer.Option(help="Training YAML.")] = Path("configs/cxr.yaml"),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint.")
    ] = False,
    init_weights: Annotated[
        Path | None,
        typer.Option(
            help="Start from this local state dict (torchvision DenseNet121 / ResNet18 "
            "layout, or a saved Tonle model); overrides init.weights.",
        ),
    ] = None,
    weights_origin: Annotated[
        str | None,
        typer.Option(help="Where --init-weights came from (recorded in the model card)."),
    ] = None,
) -> None:
    """Train, calibrate, export and register the chest X-ray triage model.

    Exit codes: 4 bad config or data, or a failed pre-flight check (named; nothing
    trained); 5 the trained model failed a held-out gate (named; nothing saved).

    Example: tonle train cxr --config configs/cxr.yaml
    Fine-tune: tonle train cxr --init-weights densenet121.pth --weights-origin "torchvision
    ImageNet" (with model.arch densenet121; init.freeze_epochs, init.backbone_lr_scale)
    Two processes: torchrun --nproc_per_node 2 -m training.cxr_train --config configs/cxr.yaml
    """
    from training.openmp import prefer_passive_openmp

    prefer_passive_openmp()  # before torch is imported (training.cxr_train)

    from models.config import ConfigError, load_config
    from models.registry import ArtifactError
    from training.cxr_gates import GateError
    from training.cxr_train import CxrTrainConfig, with_init

    try:
        cfg = with_init(load_config(config, CxrTrainConfig), init_weights, weights_origin)
    except ConfigError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    try:
        stored = train_with_progress(cfg, resume=resume)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    except ArtifactError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_BAD_ARTIFACT) from exc
    except GateError as exc:
        console.print(f"[bold red]refused:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from exc  # trained, failed a held-out gate: not saved
    if stored is not None:
        meta = stored.metadata
        auroc = meta.metrics.get("auroc_abnormal")
        out.print(
            f"saved {meta.tag} sha256={meta.sha256[:16]} "
            f"test AUROC(abnormal)={auroc.value if auroc else float('nan'):.3f}"
        )
        out.print(f"model card: {stored.card_dir / 'README.md'}")


def evaluate_cxr(stored: StoredModel, data: Path, output: Path, bootstrap: int = 500) -> None:
    """``tonle evaluate`` for a ``cxr-triage`` artifact on ``data`` (a labels CSV).

    Scores with the exported ONNX model, compares with the previous version in the
    store (same data), and writes the report (Markdown, PNG, JSON) to ``output``.

    Raises:
        typer.Exit: exit 3 for a bad artifact, 4 for bad data.
    """
    from models import registry
    from training.cxr_data import load_cxr_data
    from training.cxr_evaluate import evaluate_stored, write_card

    meta = stored.metadata
    if meta.image is None:
        console.print(f"[bold red]error:[/] {meta.tag} has no image contract")
        raise typer.Exit(EXIT_BAD_ARTIFACT)
    older = [m for m in registry.list_models(meta.name) if m.created < meta.created]
    try:
        prior = registry.verify(meta.name, older[-1].version) if older else None
    except registry.ArtifactError as exc:
        console.print(f"[bold red]error:[/] previous version: {exc}", highlight=False)
        raise typer.Exit(EXIT_BAD_ARTIFACT) from exc
    try:
        cxr = load_cxr_data(data, meta.image.size)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    report = evaluate_stored(stored, cxr, reps=bootstrap)
    before = None
    if prior is not None and prior.metadata.image == meta.image:
        before = evaluate_stored(prior, cxr, reps=bootstrap)
    write_card(meta, report, output, before)
    summary: dict[str, dict[str, Any]] = {
        r.label: {
            "auroc": r.auroc.value,
            "sensitivity": r.sensitivity,
            "specificity": r.specificity,
        }
        for r in report.labels
    }
    summary["localisation"] = {r.finding: r.model.model_dump() for r in report.localisation}
    out.print_json(json.dumps(summary))
    console.print(f"wrote {output / 'README.md'}, metrics.json, calibration.png")


def _dispatching(original: Callable[..., None]) -> Callable[..., None]:
    """Wrap the NCD ``evaluate`` command so ``cxr-triage`` models are evaluated here."""

    @functools.wraps(original)
    def evaluate(**kwargs: Any) -> None:
        from models import registry

        name, _, version = str(kwargs.get("model", "")).partition(":")
        try:
            stored = registry.verify(name, version or "latest")
        except Exception:  # let the original command report unknown models its way
            original(**kwargs)
            return
        if stored.metadata.task != "cxr-triage":
            original(**kwargs)
            return
        evaluate_cxr(stored, kwargs["data"], kwargs["output"], int(kwargs.get("bootstrap", 500)))

    evaluate.__doc__ = inspect.cleandoc(original.__doc__ or "") + (
        "\n\nChest X-ray (cxr-triage) models: --data is a labels.csv (contract C7); "
        "writes README.md, metrics.json and calibration.png, with the previous version "
        "side by side.\n\nExample: tonle evaluate cxr-triage:0.1.0 --data labels.csv -o out/"
    )
    return evaluate


def _evaluate_cxr_only(
    model: Annotated[str, typer.Argument(help="NAME:VERSION (or NAME for the latest).")],
    data: Annotated[Path, typer.Option("--data", help="labels.csv of a CXR set.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder.")] = Path(
        "artifacts/evaluation"
    ),
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates for CIs.")] = 500,
) -> None:
    """Evaluate a stored model on labelled data and write its report.

    Example: tonle evaluate cxr-triage:0.1.0 --data labels.csv -o artifacts/eval
    """
    from models import registry

    name, _, version = model.partition(":")
    try:
        stored = registry.verify(name, version or "latest")
    except registry.ArtifactError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_BAD_ARTIFACT) from exc
    evaluate_cxr(stored, data, output, bootstrap)


def import_cxr_command(
    kind: Annotated[
        str,
        typer.Argument(
            help="nih-cxr14, shenzhen, montgomery, tbx11k, chexpert, padchest, vindr-cxr or folder."
        ),
    ],
    source: Annotated[Path, typer.Argument(help="The data set folder, as downloaded.")],
    out_dir: Annotated[Path, typer.Argument(help="Where labels.csv (and masks) go.")],
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    val: Annotated[float, typer.Option(help="Share of patients for validation (0-1).")] = 0.1,
    test: Annotated[
        float,
        typer.Option(
            help="Share of patients for test (0-1) where the set has no official test list."
        ),
    ] = 0.1,
    labels: Annotated[
        Path | None, typer.Option(help="For 'folder': the labels CSV (default SOURCE/labels.csv).")
    ] = None,
    hashed_test: Annotated[
        bool,
        typer.Option(
            "--hashed-test",
            help="nih-cxr14 without test_list.txt: carve the test split by patient hash "
            "(--test) instead of refusing.",
        ),
    ] = False,
    label_map: Annotated[
        Path | None,
        typer.Option(
            help="nih-cxr14: YAML {positive: {NIH label: ours}, unknown: {NIH label: ours}} "
            "replacing the default mapping (Infiltration, Mass: unknown).",
        ),
    ] = None,
) -> None:
    """Convert a public chest X-ray data set's layout into Tonle's labels.csv.

    Splits are by patient; official test lists are kept (NIH: test_list.txt is
    required unless --hashed-test). No image found, or nothing to import: exit 4 with
    the counts, nothing written.

    Example: tonle data import-cxr nih-cxr14 ~/data/ChestX-ray14 data/nih
    """
    from models.config import ConfigError, load_config
    from training.cxr_datasets import LabelMap
    from training.cxr_import import ADAPTERS, import_dataset

    if kind not in ADAPTERS:
        console.print(f"[bold red]error:[/] unknown data set kind {kind!r}; choose from "
                      f"{', '.join(ADAPTERS)}", highlight=False)  # fmt: skip
        raise typer.Exit(2)
    try:
        mapping = load_config(label_map, LabelMap) if label_map is not None else None
        path = import_dataset(
            kind, source, out_dir, seed=seed, val_fraction=val, test_fraction=test,
            labels_csv=labels, label_map=mapping, official_test=not hashed_test,
        )  # fmt: skip
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        # An OS error from a file call names the path; our own (e.g. "none of the N
        # images ...") carries its message alone.
        said = str(exc)
        if isinstance(exc, OSError) and exc.filename and exc.strerror:
            said = f"{exc.filename}: {exc.strerror}"
        console.print(f"[bold red]error:[/] {said}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    out.print(f"wrote {path}")


def _data_group(app: typer.Typer) -> typer.Typer | None:
    return next(
        (g.typer_instance for g in app.registered_groups if g.name == "data"),
        None,
    )


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``tonle train cxr`` and ``tonle data import-cxr``; make ``tonle evaluate``
    handle ``cxr-triage`` models.

    ``tonle evaluate`` is one command for every task: when the NCD command is already
    registered its callback is wrapped to dispatch on the model's task. An
    ``import-cxr`` registered by the root before this one is replaced by
    :func:`import_cxr_command`.
    """
    train_app.command("cxr")(train_cxr_command)
    data_app = _data_group(app)
    if data_app is not None:
        data_app.registered_commands[:] = [
            c for c in data_app.registered_commands if c.name != "import-cxr"
        ]
        data_app.command("import-cxr")(import_cxr_command)
    for info in app.registered_commands:
        if info.name == "evaluate" and info.callback is not None:
            info.callback = _dispatching(info.callback)
            return
    app.command("evaluate")(_evaluate_cxr_only)
