"""``python -m cli``: the same as the ``tonle`` console script."""

from __future__ import annotations

from cli.app import main

main()
