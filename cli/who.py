"""``tonle who regions``: the WHO 2019 chart regions and countries, with their codes.

Registered on the main app by :mod:`cli.app`; it needs only the ``models`` package.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``tonle who`` to the ``tonle`` app."""
    who_app = typer.Typer(help="The WHO 2019 CVD risk charts.", no_args_is_help=True)
    who_app.command("regions")(regions)
    app.add_typer(who_app, name="who")


def regions(
    countries: Annotated[
        bool, typer.Option("--countries", help="List the countries (ISO alpha-3) instead.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the 21 GBD regions the charts are recalibrated to (code and name), or the countries.

    Use a code or name with --region, or a country code with --country, in tonle score
    and tonle evaluate.

    Examples:
      tonle who regions
      tonle who regions --countries
    """
    from rich.table import Table

    from cli.console import out
    from models.who_cvd import list_countries, list_regions

    rows: list[tuple[str, ...]]
    header: tuple[str, ...]
    if countries:
        names = dict(list_regions())
        rows = [(code, name, region, names[region]) for code, name, region in list_countries()]
        header = ("country", "name", "region", "region name")
    else:
        rows = [(code, name) for code, name in list_regions()]
        header = ("region", "name")
    if as_json:
        out.print_json(data=[dict(zip(header, row, strict=True)) for row in rows])
        return
    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    out.print(table)
