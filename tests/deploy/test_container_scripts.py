"""deploy/container's scripts (the image without Docker): they parse, and without
arguments print their usage and exit 2. Building and running the image needs root,
mmdebstrap, podman and minutes: docs/operations.md gives the manual run and its output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "deploy" / "container").glob("*.sh"))


def test_both_scripts_are_there() -> None:
    assert [p.name for p in SCRIPTS] == ["build-rootfs.sh", "smoke.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_script_parses_and_prints_its_usage(script: Path) -> None:
    parsed = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    usage = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30)

    assert parsed.returncode == 0, parsed.stderr
    assert usage.returncode == 2
    assert f"deploy/container/{script.name}" in usage.stderr
    assert "set -eu" not in usage.stderr


def test_the_packages_are_installed_with_their_hashes_and_no_compiler() -> None:
    build = (ROOT / "deploy" / "container" / "build-rootfs.sh").read_text()

    assert "--require-hashes --only-binary=:all:" in build
    assert "env/python/requirements.txt" in build
    assert "build-essential" not in build
    assert "USER bentoml" in build
