"""Logging set-up for the CLI and the service (never called at import time).

Log records must never carry PHI, tokens or raw payloads: log identifiers we mint
(request ids, model tags), never what a caller sent.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["JsonFormatter", "configure_logging"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is when a record is emitted.

    ``logging.StreamHandler()`` keeps the ``sys.stderr`` of the moment it was made. A CLI
    run under a test runner (typer's ``CliRunner``, pytest's capture) configures logging
    while that is a temporary stream closed afterwards, and every later record then fails
    with "I/O operation on closed file". The stdlib's own last-resort handler does this.
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # StreamHandler.__init__ would pin a stream

    @property
    def stream(self) -> TextIO:  # type: ignore[override]  # read-only on purpose
        return sys.stderr


def configure_logging(level: str = "INFO", json_output: bool = False) -> None:
    """Configure the root logger once, from an entry point."""
    handler = _StderrHandler()
    handler.setFormatter(
        JsonFormatter() if json_output else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
