"""Logging set-up: the handler writes to the stderr of the moment, not the one it saw."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from models.logs import configure_logging


def test_handler_outlives_the_stderr_it_was_configured_under(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A CLI run under typer's CliRunner (or pytest's capture) configures logging while
    # sys.stderr is a temporary stream that is closed afterwards; later records must go to
    # the current sys.stderr, not raise "I/O operation on closed file" in handleError.
    during = io.StringIO()
    monkeypatch.setattr(sys, "stderr", during)
    configure_logging("INFO")
    during.close()
    after = io.StringIO()
    monkeypatch.setattr(sys, "stderr", after)

    logging.getLogger("tonle.test").warning("model loaded")

    assert after.getvalue() == "WARNING tonle.test: model loaded\n"


def test_json_output_is_one_object_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("DEBUG", json_output=True)

    logging.getLogger("tonle.test").debug("first")
    logging.getLogger("tonle.test").info("second")

    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("DEBUG", "tonle.test", "first"),
        ("INFO", "tonle.test", "second"),
    ]
    assert logging.getLogger().level == logging.DEBUG
