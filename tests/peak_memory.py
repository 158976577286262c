"""Peak resident memory of one call, measured per call (Linux).

``ru_maxrss`` is the all-time peak of the process: once an earlier test has raised it,
a later bomb cannot raise it further and a check against it cannot fail. Writing ``5``
to ``/proc/PID/clear_refs`` resets the kernel's peak (``VmHWM``) to the current
resident size, so the peak read afterwards belongs to what ran in between.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["peak_growth_mb", "reset_peak", "resident_mb"]

T = TypeVar("T")


def _status(pid: int | str, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def reset_peak(pid: int | str = "self") -> float:
    """Reset the peak of ``pid`` to its current resident size; that size in MB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid, "VmRSS")


def resident_mb(pid: int | str = "self") -> tuple[float, float]:
    """(current, peak since the last reset) resident size of ``pid`` in MB."""
    return _status(pid, "VmRSS"), _status(pid, "VmHWM")


def peak_growth_mb(call: Callable[[], T]) -> tuple[T, float]:
    """Run ``call``; return its result and how far the peak rose above the start, MB."""
    start = reset_peak()
    result = call()
    return result, resident_mb()[1] - start
