"""The worker keeps large freed buffers (serving.allocator): a second 20 MB buffer
reuses the first's pages instead of faulting in new ones."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from serving.allocator import keep_freed_memory

_PROBE = """
import resource, sys
from serving.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def faults(size=20 * 1024 * 1024):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = bytearray(size)  # zero-filled: every page is touched
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del block
    return after - before
print(faults(), faults())
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")


def _faults(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    first, second = out.stdout.split()
    return int(first), int(second)


@glibc
def test_a_second_large_buffer_reuses_the_first_pages() -> None:
    first, second = _faults("tuned")
    assert first > 4000  # 20 MB of 4 KiB pages
    assert second < first // 10


@glibc
def test_without_it_the_second_buffer_faults_again() -> None:
    """The probe's control: glibc's defaults give the pages back on free."""
    first, second = _faults("default")
    assert second > first // 2


def test_does_nothing_off_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert keep_freed_memory() is False
