"""The training commands: ``tonle train``, ``tonle data``, ``tonle demo`` and each area's own.

Added to the root app by :mod:`cli.app` only where the ``training`` package and its
dependencies are installed. Each training area keeps its commands in its own module
with a ``register`` function; :func:`register` below is the one list of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli import monitor
from cli.console import EXIT_USAGE, console, fail, out
from cli.serve import serve

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the training command groups and every training area's commands to ``app``."""
    from training import cxr_cli, ncd_cli, ncd_data_cli
    from training.calibrate import cli as calibrate_cli

    train_app = typer.Typer(help="Train a model from a config in configs/.", no_args_is_help=True)
    data_app = typer.Typer(
        help="Build, convert and inspect training data sets.", no_args_is_help=True
    )
    app.add_typer(train_app, name="train")
    app.add_typer(data_app, name="data")
    app.command("demo")(demo)
    data_app.command("synthetic-cxr")(data_synthetic_cxr)
    monitor.register_data(data_app)  # tonle data from-feedback
    # One line per training area (each adds its commands to the groups it is given).
    ncd_cli.register(app, train_app)  # tonle train cvd-risk / diabetes-risk, tonle evaluate
    ncd_data_cli.register(app, data_app)  # tonle data synthetic-ncd / nafld, tonle score
    cxr_cli.register(app, train_app)  # tonle train cxr, data import-cxr; evaluate: cxr-triage
    calibrate_cli.register(app)  # tonle calibrate cxr


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
        raise fail(str(exc), EXIT_USAGE) from exc
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("rendering radiographs", total=n)
        labels = generate(out_dir, n, seed, shape, progress=lambda k: bar.advance(task, k))
    out.print(f"wrote {n} images and {labels}")
    if contact_sheet is not None:
        from training.cxr_sheet import contact_sheet as draw_sheet

        out.print(f"contact sheet {draw_sheet(labels, contact_sheet)}")


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
