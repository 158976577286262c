"""The ``tonle`` command: one Typer app for operating and for making models.

The operations commands (``serve``, ``db``, ``apikey``, ``audit``, ``models``,
``imaging``, ``who``, ``monitor``, ``bento``, ``demo-token``) need only the serving
dependencies and ship in the Bento. The training commands (``train``, ``data``,
``evaluate``, ``demo`` ...) are added when
the ``training`` package and its dependencies (``pip install 'tonle[train]'``) are
importable; :mod:`cli.app` holds both registration lists.
"""

from __future__ import annotations

from cli.app import app, main

__all__ = ["app", "main"]
