"""The ``tonle`` Typer app and its two registration lists.

* Operations (serving dependencies only; they ship in the Bento): ``serve``, ``db``,
  ``apikey``, ``audit``, ``models``, ``imaging``, ``who``, ``monitor``, ``bento``,
  ``demo-token``.
* Training (``train``, ``data``, ``evaluate``, ``recalibrate``, ``calibrate``, ``score``,
  ``demo``): added only when
  the ``training`` package and its dependencies can be imported. Elsewhere, e.g. in the
  serving image, ``tonle --help`` says what is missing and how to get it.

Nothing heavy is imported to build the app: each command imports what it needs.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from cli import bento, imaging, models, monitor, ops, serve, who
from cli.console import EXIT_FAILED, fail

__all__ = ["TRAINING_MODULES", "app", "main", "missing_training_modules"]

# What the training commands import: the package itself and the ``train`` extra.
TRAINING_MODULES = (
    "training",
    "torch",
    "torchvision",
    "monai",
    "sklearn",
    "skl2onnx",
    "pandas",
    "matplotlib",
)


class _Tonle(TyperGroup):
    """The root group: a file or connection error that no command reported itself
    ends the run with one line naming the path and the reason, not a traceback
    (``--verbose`` logs the traceback too)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            logging.getLogger("cli").debug("stopped by an OSError", exc_info=True)
            where = f"cannot use {exc.filename}: " if exc.filename is not None else ""
            raise fail(f"{where}{exc.strerror or type(exc).__name__}", EXIT_FAILED) from None


app = typer.Typer(
    cls=_Tonle,
    name="tonle",
    help=(
        "Tonle: train, evaluate, export and serve advisory AI models for clinical "
        "decision support (NCD risk, chest X-ray triage).\n\n"
        "Stages: data -> train (checks, fits, exports ONNX) -> evaluate -> models -> serve. "
        "Try: tonle demo"
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Log debug messages on stderr."),
    ] = False,
    log_json: Annotated[
        bool,
        typer.Option(
            "--log-json", help="Log one JSON object per line on stderr (for log shippers)."
        ),
    ] = False,
) -> None:
    from models.logs import configure_logging

    configure_logging("DEBUG" if verbose else "INFO", log_json)
    # Alembic's set-up lines on every database command are noise; -v shows them.
    logging.getLogger("alembic").setLevel(logging.NOTSET if verbose else logging.WARNING)


def missing_training_modules() -> list[str]:
    """The modules of :data:`TRAINING_MODULES` that cannot be imported here.

    Looked up without importing them, so ``tonle --help`` stays fast.
    """
    missing = []
    for name in TRAINING_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


# Operations: one line per module.
ops.register(app)  # tonle db / apikey / audit
models.register(app)  # tonle models list / show / verify
serve.register(app)  # tonle serve / demo-token
imaging.register(app)  # tonle imaging orthanc-lua / analyse
who.register(app)  # tonle who regions
monitor.register(app)  # tonle monitor report
bento.register(app)  # tonle bento build

_missing = missing_training_modules()
if _missing:
    app.info.epilog = (
        "Training commands (train, data, evaluate, recalibrate, calibrate, score, demo) "
        "are not installed here "
        f"(cannot import: {', '.join(_missing)}). They need a source checkout with the "
        "training extra: pip install -e '.\\[train]'"  # \\[: not rich markup
    )
else:
    from cli import training

    training.register(app)


def main() -> None:
    """Console-script entry point (``python -m cli`` too: its usage lines say ``tonle``)."""
    app(prog_name="tonle")
