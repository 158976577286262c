"""Build everything the demo serves, from synthetic data only (no downloads)."""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.console import Console

__all__ = ["DEMO_DIR", "build_demo"]

DEMO_DIR = Path(".tonle")


def build_demo(console: Console) -> Path:
    """Build (or reuse) the demo models and write the serving config pinning them.

    Returns:
        Path of the serving YAML that pins the demo models.
    """
    DEMO_DIR.mkdir(exist_ok=True)
    pinned: dict[str, str] = {}
    config_path = DEMO_DIR / "serving.yaml"
    config_path.write_text(
        "# Written by `tonle demo`: the demo models, pinned.\n"
        + yaml.safe_dump({"models": pinned}, sort_keys=True),
        encoding="utf-8",
    )
    console.print(f"demo models: {', '.join(pinned) or 'none yet'}; config {config_path}")
    return config_path
