"""``tonle serve`` and ``tonle demo-token``: run the service, call the demo."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT, EXIT_USAGE, console, fail, out

__all__ = ["demo_token", "register", "serve"]


def register(app: typer.Typer) -> None:
    """Add ``tonle serve`` and ``tonle demo-token`` to the root app."""
    app.command("serve")(serve)
    app.command("demo-token")(demo_token)


def _is_loopback(host: str) -> bool:
    try:
        return all(
            ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None)
        )
    except (socket.gaierror, ValueError):
        return False


def _check_settings(dev: bool, config: Path | None) -> None:
    """Refuse here what every BentoML worker would refuse at start, in a loop: invalid
    ``TONLE_*`` settings, or no link key outside ``--dev`` and the demo (exit 2); a
    serving config or allowed-issuers file (``TONLE_ALLOWED_ISSUERS``) that is missing,
    not YAML or has unknown keys or bad values (exit 4)."""
    from models.config import load_config
    from serving.config import ServingConfig
    from serving.issuers import load_allowed_issuers
    from serving.settings import Settings
    from serving.ui.links import require_key

    try:
        settings = Settings()
        if not dev:
            require_key(settings)
    except ValueError as exc:  # pydantic's ValidationError included
        raise fail(str(exc), EXIT_USAGE) from None
    try:
        load_config(config or settings.serving_config, ServingConfig)
        if settings.allowed_issuers is not None:
            load_allowed_issuers(settings.allowed_issuers)
    except ValueError as exc:  # models.config.ConfigError, serving.issuers.JwksError
        raise fail(str(exc), EXIT_BAD_INPUT) from None


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
        raise fail(
            f"--dev disables authentication and is refused on non-loopback host {host!r}",
            EXIT_USAGE,
        )
    _check_settings(dev, config)
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


def demo_token(
    path: Annotated[str, typer.Argument(help="Endpoint path, e.g. /cds-services/ncd-cvd-risk.")],
    port: Annotated[int, typer.Option(help="Port the demo serves on.")] = 3000,
) -> None:
    """Print a single-use CDS Hooks JWT from the local demo issuer (demo only).

    Example: curl -H "Authorization: Bearer $(tonle demo-token /cds-services)" ...
    """
    from serving.demo_issuer import DEMO_ISSUER_DIR, sign_token

    if not (DEMO_ISSUER_DIR / "allowed-issuers.yaml").exists():
        raise fail(
            "no demo issuer here; run `tonle demo` (or `make demo`) first", EXIT_BAD_ARTIFACT
        )
    out.print(sign_token(f"http://127.0.0.1:{port}{path}"), soft_wrap=True)
