"""``tonle bento build``: the serving image's Bento, with its pinned models inside.

The Bento is built from a staged copy of the project: the code ``bentofile.yaml``
includes, the chosen serving config as ``configs/serving.yaml``, and ``models:`` set to
that config's pins (each re-verified first). It goes into the BentoML store at the
model store's home (``tonle models list`` prints it), next to the models it packs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import yaml

from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT, EXIT_FAILED, console, fail, out

__all__ = ["bento_app", "build", "register"]

bento_app = typer.Typer(
    help="Build the serving Bento (code, models, config).", no_args_is_help=True
)

# What a Bento's source needs from the project (bentofile.yaml's include picks within).
_STAGED = ("cli", "configs", "models", "serving", "requirements", "deploy/bento")


def register(app: typer.Typer) -> None:
    """Add ``tonle bento`` to the root app."""
    app.add_typer(bento_app, name="bento")


def pinned_tags(config: Path) -> list[str]:
    """The ``NAME:VERSION`` tags a serving config pins, each verified in the model store.

    Raises:
        typer.Exit: 4 if the config is invalid or pins nothing, 3 if a model is missing
            or does not match its metadata.
    """
    from models import registry
    from models.config import ConfigError, load_config
    from serving.config import ServingConfig

    try:
        pins = load_config(config, ServingConfig).models
    except ConfigError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from exc
    if not pins:
        raise fail(f"{config} pins no models: the Bento would serve nothing", EXIT_BAD_INPUT)
    try:
        return [registry.verify(name, version).metadata.tag for name, version in pins.items()]
    except registry.ArtifactError as exc:
        raise fail(str(exc), EXIT_BAD_ARTIFACT) from exc


def build(project: Path, config: Path, tags: list[str], version: str | None) -> str:
    """Stage ``project`` with ``config`` and ``tags``, run ``bentoml build``; return the tag.

    Raises:
        typer.Exit: 1 if ``bentoml build`` fails (its output is printed).
    """
    from models.registry import store_home

    with tempfile.TemporaryDirectory(prefix="tonle-bento-") as tmp:
        stage = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in _STAGED:
            shutil.copytree(project / name, stage / name, ignore=ignore)
        shutil.copyfile(config, stage / "configs" / "serving.yaml")
        options = yaml.safe_load((project / "bentofile.yaml").read_text(encoding="utf-8"))
        options["models"] = tags
        (stage / "bentofile.yaml").write_text(yaml.safe_dump(options, sort_keys=False))
        command = [sys.executable, "-m", "bentoml", "build", ".", "--output", "tag"]
        if version:
            command += ["--version", version]
        env = {**os.environ, "BENTOML_HOME": str(store_home()), "BENTOML_DO_NOT_TRACK": "True"}
        done = subprocess.run(
            command, cwd=stage, env=env, capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        console.print(done.stdout + done.stderr, markup=False, highlight=False)
        raise fail("bentoml build failed", EXIT_FAILED)
    return done.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


@bento_app.command("build")
def bento_build(
    config: Annotated[
        Path, typer.Option(help="Serving YAML whose pinned models the Bento packs.")
    ] = Path("configs/serving.yaml"),
    project: Annotated[Path, typer.Option(help="Project folder holding bentofile.yaml.")] = Path(
        "."
    ),
    version: Annotated[str | None, typer.Option(help="Bento version (default: generated).")] = None,
) -> None:
    """Build the serving Bento with the models CONFIG pins packed inside.

    Example: tonle bento build --config configs/serving.yaml
    """
    from models.registry import store_home

    if not (project / "bentofile.yaml").is_file():
        raise fail(f"{project.resolve()} has no bentofile.yaml", EXIT_BAD_INPUT)
    tags = pinned_tags(config)
    tag = build(project, config, tags, version)
    console.print(
        f"built {tag} with {', '.join(tags)}; BentoML store: {store_home()} "
        f"(export: BENTOML_HOME={store_home()} bentoml export {tag} tonle.bento)",
        highlight=False,
    )
    out.print(tag, highlight=False)
