"""``tonle imaging``: chest X-ray serving helpers for hospital IT.

* ``tonle imaging orthanc-lua URL`` prints (or writes) the Orthanc Lua hook that asks
  Tonle to analyse each study when it becomes stable.
* ``tonle imaging analyse FILE --url URL`` posts one DICOM or PNG file to a running
  service and prints the read (scores, flags, thresholds and their source).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from cli.console import EXIT_BAD_INPUT, EXIT_FAILED, console, out

__all__ = ["imaging_app", "register"]

imaging_app = typer.Typer(
    help="Chest X-ray serving: PACS hook, analyse a file.", no_args_is_help=True
)


@contextmanager
def _quiet_http_client(verbose: bool) -> Iterator[None]:
    """httpx logs each request at INFO ("HTTP Request: POST ..."): noise among the
    printed read, so it is kept to warnings unless ``tonle -v``."""
    logger = logging.getLogger("httpx")
    before = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


@imaging_app.command("orthanc-lua")
def orthanc_lua(
    url: Annotated[str, typer.Argument(help="Tonle's base URL as the PACS reaches it.")],
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of printing.")
    ] = None,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable of the Orthanc process holding the key.")
    ] = "TONLE_API_KEY",
) -> None:
    """Print the Orthanc ``OnStableStudy`` hook (install with LuaScripts + StableAge).

    Example: tonle imaging orthanc-lua https://tonle.hospital.example -o /etc/orthanc/tonle.lua
    """
    from serving.imaging.studies import orthanc_on_stable_study_lua

    _check_url(url)
    script = orthanc_on_stable_study_lua(url, api_key_env)
    if output is None:
        out.print(script, markup=False, highlight=False)
    else:
        output.write_text(script, encoding="utf-8")
        console.print(f"wrote {output}")


@imaging_app.command("analyse")
def analyse(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="DICOM (.dcm) or PNG file.", exists=True)],
    url: Annotated[str, typer.Option(help="Tonle base URL.")] = "http://127.0.0.1:3000",
    patient: Annotated[str | None, typer.Option(help="Patient id to file the read under.")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable holding the API key.")] = (
        "TONLE_API_KEY"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the full JSON answer.")] = False,
) -> None:
    """Send one image to ``POST /v1/imaging/cxr`` and print the read.

    Example: TONLE_API_KEY=... tonle imaging analyse chest.dcm --url http://127.0.0.1:3000
    (``tonle -v imaging analyse ...`` also logs the HTTP exchange.)
    """
    import httpx

    _check_url(url)
    data = file.read_bytes()
    media = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "application/dicom"
    headers = {"content-type": media}
    key = os.environ.get(api_key_env)
    if key:
        headers["X-API-Key"] = key
    params = {"patient": patient} if patient else None
    verbose = bool(ctx.find_root().params.get("verbose"))
    try:
        with _quiet_http_client(verbose):
            response = httpx.post(
                url.rstrip("/") + "/v1/imaging/cxr",
                content=data,
                headers=headers,
                params=params,
                timeout=60,
            )
    except httpx.HTTPError as exc:
        console.print(f"[bold red]error:[/] cannot reach {url}: {type(exc).__name__}")
        raise typer.Exit(EXIT_FAILED) from exc
    try:
        body = response.json() if response.content else {}
    except ValueError:  # not Tonle (wrong --url), or a proxy's error page
        body = {}
    if not isinstance(body, dict):
        body = {}
    if as_json and body:
        out.print_json(json.dumps(body))
    if response.status_code != 200:
        reason = body.get("reason") or body.get("error") or f"HTTP {response.status_code}"
        detail = body.get("detail")
        console.print(f"no read: {reason}" + (f" ({detail})" if detail else ""), markup=False)
        if response.status_code in (401, 403):
            hint = f"${api_key_env} is not set" if not key else f"${api_key_env} was refused"
            console.print(
                f"{hint}; create a key with: tonle apikey create --tenant SITE --name NAME",
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_FAILED)
        if not body:
            console.print(
                f"no Tonle answer at {url} (is --url the service's base URL?)",
                soft_wrap=True,
                markup=False,
            )
            raise typer.Exit(EXIT_FAILED)
        raise typer.Exit(EXIT_BAD_INPUT if response.status_code < 500 else EXIT_FAILED)
    if not as_json:
        # soft_wrap: never break a line (the heatmap link must work when copied).
        model = body["model"]
        out.print(
            f"{model['name']} {model['version']} - {body['advisory']}", soft_wrap=True, markup=False
        )
        for finding in body["findings"]:
            flag = "FLAG" if finding["flagged"] else "    "
            out.print(
                f"{flag} {finding['label']:<14} {finding['probability']:.3f}  threshold "
                f"{finding['threshold']:.3f} ({finding['threshold_source']})",
                soft_wrap=True,
                markup=False,
            )
        out.print(f"heatmap: {body['heatmap_url']}", soft_wrap=True, markup=False)


def _check_url(url: str) -> None:
    if not url.startswith(("http://", "https://")):
        console.print(f"[bold red]error:[/] URL {url!r} must start with http:// or https://")
        raise typer.Exit(EXIT_BAD_INPUT)


def register(app: typer.Typer) -> None:
    """Add ``tonle imaging`` to the root app."""
    app.add_typer(imaging_app, name="imaging")
