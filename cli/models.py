"""``tonle models``: list, inspect and verify artifacts in the model store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.console import EXIT_BAD_ARTIFACT, console, fail, out

if TYPE_CHECKING:
    from models.registry import StoredModel

__all__ = ["models_app", "register"]

models_app = typer.Typer(
    help="List, inspect and verify artifacts in the model store.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add ``tonle models`` to the root app."""
    app.add_typer(models_app, name="models")


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


def _artifact(tag: str, *, verify: bool) -> StoredModel:
    """The artifact NAME:VERSION (NAME: the latest), re-hashed if ``verify``; exit 3 if bad."""
    from models import registry

    name, _, version = tag.partition(":")
    try:
        lookup = registry.verify if verify else registry.get
        return lookup(name, version or "latest")
    except registry.ArtifactError as exc:
        raise fail(str(exc), EXIT_BAD_ARTIFACT) from exc
