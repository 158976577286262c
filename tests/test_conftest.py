"""The shared fixtures: a CLI run's logging set-up does not outlive its test.

The two tests run in file order (pytest's default): the first changes the root logger the
way every ``tonle`` command does, the second checks that it got the snapshot back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

_before: dict[str, object] = {}


def test_1_a_verbose_cli_run_replaces_the_root_logging(model_store: Path) -> None:
    root = logging.getLogger()
    _before["handlers"], _before["level"] = root.handlers[:], root.level

    result = CliRunner().invoke(app, ["-v", "models", "list"])

    assert result.exit_code == 0, result.output
    assert root.level == logging.DEBUG
    assert len(root.handlers) == 1
    assert root.handlers[0] not in _before["handlers"]  # type: ignore[operator]
    _before["added"] = root.handlers[0]


def test_2_the_next_test_gets_the_root_logging_back(capsys: pytest.CaptureFixture[str]) -> None:
    if not _before:
        pytest.skip("checks what test_1 left behind; run the whole module")
    root = logging.getLogger()

    assert root.handlers == _before["handlers"]
    assert root.level == _before["level"]
    # The symptom people saw: every record also printed to captured stderr.
    logging.getLogger("tonle.test").warning("once, to pytest's log capture only")
    assert capsys.readouterr().err == ""
