"""The operations commands work where only the serving dependencies are installed.

Each command runs in a fresh interpreter in which ``training`` and the training
dependencies cannot be imported (as in the serving image, which ships neither): an
import finder refuses them, so any operations command that imports one fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli import app
from cli.app import TRAINING_MODULES, missing_training_modules

ROOT = Path(__file__).resolve().parents[2]

# Runs ``tonle ARGS`` with TRAINING_MODULES (and their submodules) unimportable.
_RUNNER = """
import sys

BLOCKED = {blocked!r}


class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Absent())
from cli.app import main

sys.argv = ["tonle", *sys.argv[1:]]
main()
"""


def _tonle(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TONLE_", "BENTOML_", "PYTHON"))
    }
    env |= {
        "PYTHONPATH": str(ROOT),
        "TONLE_MODEL_STORE": str(tmp_path / "store"),
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    code = _RUNNER.format(blocked=set(TRAINING_MODULES))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_lists_the_operations_commands_and_says_how_to_get_the_rest(
    tmp_path: Path,
) -> None:
    result = _tonle(tmp_path, "--help")

    assert result.returncode == 0, result.stderr
    commands = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("│ ")}
    assert {"serve", "db", "apikey", "audit", "models", "imaging", "demo-token"} <= commands
    assert not commands & {"train", "data", "evaluate", "score", "demo"}
    text = " ".join(result.stdout.split())
    assert "cannot import: training, torch" in text
    assert "pip install -e '.[train]'" in text


def test_database_and_api_key_commands_run_without_training(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"

    upgraded = _tonle(tmp_path, "db", "upgrade", "--database-url", url)
    created = _tonle(
        tmp_path, "apikey", "create", "--tenant", "site-a", "--name", "lab", "--database-url", url
    )
    listed = _tonle(tmp_path, "apikey", "list", "--json", "--database-url", url)
    exported = _tonle(
        tmp_path, "audit", "export", "-o", str(tmp_path / "a.ndjson"), "--database-url", url
    )

    assert upgraded.returncode == 0, upgraded.stderr
    assert "audit database at revision" in upgraded.stdout
    assert created.returncode == 0, created.stderr
    assert listed.returncode == 0, listed.stderr
    assert [key["tenant"] for key in json.loads(listed.stdout)] == ["site-a"]
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "a.ndjson").read_text() == ""


def test_models_serve_and_imaging_commands_run_without_training(tmp_path: Path) -> None:
    models = _tonle(tmp_path, "models", "list", "--json")
    missing = _tonle(tmp_path, "models", "verify", "cvd-risk:9.9.9")
    no_key = _tonle(tmp_path, "serve", "--port", "1")
    lua = _tonle(tmp_path, "imaging", "orthanc-lua", "http://127.0.0.1:3000")

    assert models.returncode == 0, models.stderr
    assert json.loads(models.stdout) == []
    assert missing.returncode == 3, missing.stderr
    assert no_key.returncode == 2, no_key.stderr
    assert "link" in no_key.stderr.lower()
    assert lua.returncode == 0, lua.stderr
    assert "function OnStableStudy" in lua.stdout


def test_a_blocked_training_import_fails_the_run(tmp_path: Path) -> None:
    """The harness itself: a command that needs training/ does fail under it."""
    result = _tonle(tmp_path, "train", "cvd-risk", "--help")

    assert result.returncode == 2
    assert "No such command 'train'" in result.stderr


def test_with_training_installed_every_command_is_registered() -> None:
    if missing_training_modules():
        pytest.skip(f"training dependencies not installed: {missing_training_modules()}")
    names = {info.name for info in app.registered_groups} | {
        info.name or (info.callback.__name__ if info.callback else "")
        for info in app.registered_commands
    }
    assert {"train", "data", "demo", "evaluate", "score", "serve", "db", "models"} <= names
