"""The ``tonle`` command's consoles and the exit codes scripts can rely on.

* 0 - success
* 1 - the command ran and failed (e.g. a check did not pass)
* 2 - usage error (bad option or argument)
* 3 - an artifact is missing or failed verification
* 4 - input data or configuration is invalid

Every command module prints through :data:`console` (messages for a person, on stderr)
and :data:`out` (the command's result, on stdout), and stops with :func:`fail`.
"""

from __future__ import annotations

import typer
from rich.console import Console

__all__ = [
    "EXIT_BAD_ARTIFACT",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "console",
    "fail",
    "out",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_ARTIFACT = 3
EXIT_BAD_INPUT = 4

# Never hard-wrapped at the terminal's (or, in a pipe, 80 columns') width: a message or
# a result line stays one line, so paths and keys in it can be pasted and grepped.
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print an error for a person and return the Exit to raise.

    Args:
        message: What went wrong, naming the bad value and what is allowed.
        code: The exit code (one of this module's ``EXIT_*``).

    Returns:
        The ``typer.Exit`` for the caller to raise.
    """
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)
