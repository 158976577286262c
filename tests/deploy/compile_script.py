"""``requirements/compile.py`` for the deploy tests (a script, not a package module)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def compile_module() -> ModuleType:
    """``requirements/compile.py``, loaded from its file."""
    spec = importlib.util.spec_from_file_location("compile", ROOT / "requirements/compile.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
