"""Load YAML configuration files into pydantic models with errors a person can act on."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "load_config"]

T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file is missing, not YAML, or has invalid values."""


def load_config(path: Path, model: type[T]) -> T:
    """Read ``path`` (YAML, data only) into ``model``.

    Raises:
        ConfigError: naming the file, each bad key, its value and what is allowed.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(path, exc)) from exc


def _explain(path: Path, exc: ValidationError) -> str:
    lines = [f"config file {path} has {exc.error_count()} invalid value(s):"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        value = error.get("input")
        shown = "missing" if error["type"] == "missing" else repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        lines.append(f"  {key} = {shown}: {error['msg']}")
    return "\n".join(lines)
