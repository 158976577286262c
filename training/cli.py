"""The ``tonle`` command line: one command per stage of a model's life.

Exit codes scripts can rely on:

* 0 - success
* 1 - the command ran and failed (e.g. a check did not pass)
* 2 - usage error (bad option or argument)
* 3 - an artifact is missing or failed verification
* 4 - input data or configuration is invalid
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from training import ops_cli

if TYPE_CHECKING:
    from models.registry import StoredModel

__all__ = ["EXIT_BAD_ARTIFACT", "EXIT_BAD_INPUT", "EXIT_FAILED", "app", "main"]

EXIT_FAILED = 1
EXIT_BAD_ARTIFACT = 3
EXIT_BAD_INPUT = 4

console = Console(stderr=True)
out = Console()

app = typer.Typer(
    name="tonle",
    help=(
        "Tonle: train, evaluate, export and serve advisory AI models for clinical "
        "decision support (NCD risk, chest X-ray triage).\n\n"
        "Stages: train -> evaluate -> export -> models -> serve. "
        "Try: tonle demo"
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
models_app = typer.Typer(
    help="List, inspect and verify artifacts in the model store.", no_args_is_help=True
)
train_app = typer.Typer(help="Train a model from a config in configs/.", no_args_is_help=True)
data_app = typer.Typer(help="Build, convert and inspect training data sets.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")
ops_cli.register(app)  # tonle db / apikey / audit


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print an error for a person and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines.")] = False,
) -> None:
    from models.logs import configure_logging

    configure_logging("DEBUG" if verbose else "INFO", log_json)


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Only this model name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List models and versions in the store.

    Example: tonle models list cvd-risk
    """
    from models import registry

    found = registry.list_models(name)
    if as_json:
        out.print_json(json.dumps([json.loads(m.model_dump_json()) for m in found]))
        return
    table = Table("name", "version", "task", "created", "sha256")
    for meta in found:
        table.add_row(
            meta.name, meta.version, meta.task, f"{meta.created:%Y-%m-%d %H:%M}", meta.sha256[:16]
        )
    out.print(table)
    console.print(f"model store: {registry.store_home()}")


@models_app.command("show")
def models_show(
    tag: Annotated[str, typer.Argument(help="NAME:VERSION (or NAME for the latest).")],
) -> None:
    """Print an artifact's full metadata as JSON.

    Example: tonle models show cvd-risk:1.0.0
    """
    from models import registry

    out.print_json(json.dumps(registry.describe(_artifact(tag, verify=False))))


@models_app.command("verify")
def models_verify(
    tag: Annotated[str, typer.Argument(help="NAME:VERSION (or NAME for the latest).")],
) -> None:
    """Re-hash an artifact and check its graph; exit 3 if it does not match its metadata.

    Example: tonle models verify cvd-risk:1.0.0
    """
    stored = _artifact(tag, verify=True)
    out.print(f"OK {stored.metadata.tag} sha256={stored.metadata.sha256}")


@data_app.command("synthetic-cxr")
def data_synthetic_cxr(
    out_dir: Annotated[Path, typer.Argument(help="Output folder (created).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of images.")] = 200,
    seed: Annotated[int, typer.Option(help="Data set seed.")] = 0,
    size: Annotated[
        str, typer.Option(help="Side in pixels, or ROWSxCOLS (e.g. 3000x2500).")
    ] = "512",
    contact_sheet: Annotated[
        Path | None, typer.Option(help="Also draw the first 10 images into this PNG.")
    ] = None,
) -> None:
    """Write synthetic frontal chest radiographs (DICOM), finding masks and labels.csv.

    Example: tonle data synthetic-cxr data/synthetic-cxr --n 200 --seed 0 --size 512
    """
    from rich.progress import Progress

    from training.cxr_synthetic import generate, parse_size

    try:
        shape = parse_size(size)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("rendering radiographs", total=n)
        labels = generate(out_dir, n, seed, shape, progress=lambda k: bar.advance(task, k))
    out.print(f"wrote {n} images and {labels}")
    if contact_sheet is not None:
        from training.cxr_sheet import contact_sheet as draw_sheet

        out.print(f"contact sheet {draw_sheet(labels, contact_sheet)}")


@data_app.command("import-cxr")
def data_import_cxr(
    kind: Annotated[str, typer.Argument(help="nih-cxr14, shenzhen, montgomery, tbx11k or folder.")],
    source: Annotated[Path, typer.Argument(help="The data set folder, as downloaded.")],
    out_dir: Annotated[Path, typer.Argument(help="Where labels.csv (and masks) go.")],
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    val: Annotated[float, typer.Option(help="Share of patients for validation.")] = 0.1,
    test: Annotated[float, typer.Option(help="Share for test without an official list.")] = 0.1,
    labels: Annotated[
        Path | None, typer.Option(help="For 'folder': the labels CSV (default SOURCE/labels.csv).")
    ] = None,
) -> None:
    """Convert a public chest X-ray data set's layout into Tonle's labels.csv.

    Splits are by patient; official test lists are kept.

    Example: tonle data import-cxr nih-cxr14 ~/data/ChestX-ray14 data/nih
    """
    from training.cxr_datasets import ADAPTERS, import_dataset

    if kind not in ADAPTERS:
        raise fail(f"unknown data set kind {kind!r}; choose from {', '.join(ADAPTERS)}", 2)
    try:
        path = import_dataset(
            kind, source, out_dir, seed=seed, val_fraction=val, test_fraction=test,
            labels_csv=labels,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from exc
    out.print(f"wrote {path}")


def _artifact(tag: str, *, verify: bool) -> StoredModel:
    """The artifact NAME:VERSION (NAME: the latest), re-hashed if ``verify``; exit 3 if bad."""
    from models import registry

    name, _, version = tag.partition(":")
    try:
        lookup = registry.verify if verify else registry.get
        return lookup(name, version or "latest")
    except registry.ArtifactError as exc:
        raise fail(str(exc), EXIT_BAD_ARTIFACT) from exc


def _is_loopback(host: str) -> bool:
    try:
        return all(
            ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None)
        )
    except (socket.gaierror, ValueError):
        return False


def _check_settings(dev: bool) -> None:
    """Refuse here (exit 2) what every BentoML worker would refuse at start, in a loop:
    invalid ``TONLE_*`` settings, or no link key outside ``--dev`` and the demo."""
    from serving.settings import Settings
    from serving.ui.links import require_key

    try:
        settings = Settings()
        if not dev:
            require_key(settings)
    except ValueError as exc:  # pydantic's ValidationError included
        raise fail(str(exc), 2) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 3000,
    config: Annotated[
        Path | None,
        typer.Option(help="Serving YAML with pinned models (default: TONLE_SERVING_CONFIG)."),
    ] = None,
    dev: Annotated[
        bool, typer.Option("--dev", help="Disable caller auth. Refused unless bound to loopback.")
    ] = False,
) -> None:
    """Serve the pinned models with BentoML (CDS Hooks, FHIR and REST routes).

    Example: tonle serve --port 3000 --config configs/serving.yaml
    """
    if dev and not _is_loopback(host):
        raise fail(f"--dev disables authentication and is refused on non-loopback host {host!r}", 2)
    _check_settings(dev)
    env = dict(os.environ)
    if config is not None:
        env["TONLE_SERVING_CONFIG"] = str(config.resolve())
    if dev:
        env["TONLE_DEV"] = "1"
        console.print("[bold yellow]WARNING: --dev: callers are NOT authenticated.[/]")
    env.setdefault("TONLE_PUBLIC_URL", f"http://{host}:{port}")
    from models.registry import store_home

    env["BENTOML_HOME"] = str(store_home())
    command = [
        sys.executable, "-m", "bentoml", "serve", "serving.service:Tonle",
        "--host", host, "--port", str(port),
    ]  # fmt: skip
    os.execvpe(command[0], command, env)  # noqa: S606 - replaces this process by design


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port to serve on (127.0.0.1 only).")] = 3000,
    build_only: Annotated[
        bool, typer.Option("--build-only", help="Build the demo models, do not serve.")
    ] = False,
) -> None:
    """Build the demo models from synthetic data, then serve them on 127.0.0.1.

    Example: tonle demo --port 3000
    """
    from training.openmp import prefer_passive_openmp

    prefer_passive_openmp()  # idle training threads sleep; before torch / sklearn load
    from training.demo import DEMO_ISSUERS_FILE, DEMO_REQUEST, build_demo

    serving_config = build_demo(console)
    # The demo EHR's token issuer (keys made by build_demo) is the one trusted caller.
    os.environ.setdefault("TONLE_ALLOWED_ISSUERS", str(DEMO_ISSUERS_FILE.resolve()))
    # ... and its folder switches on the demo EHR page and its token endpoint.
    os.environ.setdefault("TONLE_DEMO_ISSUER_DIR", str(DEMO_ISSUERS_FILE.parent.resolve()))
    out.print(
        f"\nOpen the demo EHR:  http://127.0.0.1:{port}/ui/ehr"
        f"   (Khmer: http://127.0.0.1:{port}/ui/ehr?lang=km)\n"
        "\nTry it from another terminal in this folder (each token is single-use):\n"
        f"  curl -s http://127.0.0.1:{port}/v1/models\n"
        f"  T=$(.venv/bin/tonle demo-token /cds-services/ncd-cvd-risk --port {port})\n"
        f'  curl -s -H "Authorization: Bearer $T" -H "Content-Type: application/json" '
        f"--data @{DEMO_REQUEST} http://127.0.0.1:{port}/cds-services/ncd-cvd-risk"
        " | python3 -m json.tool\n",
        # Never hard-wrapped (rich breaks lines at 80 columns without a terminal, or
        # at a narrow one's width): the commands must work as pasted.
        soft_wrap=True,
    )
    if not build_only:
        serve(host="127.0.0.1", port=port, config=serving_config, dev=False)


from training.ncd_cli import register as _register_ncd  # noqa: E402 - needs app, train_app

_register_ncd(app, train_app)

from training.ncd_data_cli import register as _register_ncd_data  # noqa: E402 - needs data_app

_register_ncd_data(app, data_app)

from training.cxr_cli import register as _register_cxr  # noqa: E402 - needs app, train_app

_register_cxr(app, train_app)  # tonle train cxr; tonle evaluate handles cxr-triage models

from training.imaging_cli import register as _register_imaging  # noqa: E402

_register_imaging(app)  # tonle imaging orthanc-lua / analyse

from training.calibrate.cli import register as _register_calibrate  # noqa: E402

_register_calibrate(app)  # tonle calibrate cxr


@app.command("demo-token")
def demo_token(
    path: Annotated[str, typer.Argument(help="Endpoint path, e.g. /cds-services/ncd-cvd-risk.")],
    port: Annotated[int, typer.Option(help="Port the demo serves on.")] = 3000,
) -> None:
    """Print a single-use CDS Hooks JWT from the local demo issuer (demo only).

    Example: curl -H "Authorization: Bearer $(tonle demo-token /cds-services)" ...
    """
    from serving.demo_issuer import DEMO_ISSUER_DIR, sign_token

    if not (DEMO_ISSUER_DIR / "allowed-issuers.yaml").exists():
        raise fail("no demo issuer here; run `tonle demo` (or `make demo`) first", 3)
    out.print(sign_token(f"http://127.0.0.1:{port}{path}"), soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    app()
