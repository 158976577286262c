"""Estimate the serving image's size from what it installs (no container daemon needed).

Sums the installed size of every package in ``requirements/serving.txt`` (from each
installed distribution's RECORD, i.e. the files a wheel puts on disk, bytecode
included), plus the Bento's own folder when given, plus the base image.

    .venv/bin/python deploy/bento/image_size.py [BENTO_DIR]
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# python:3.11-slim (Debian bookworm), uncompressed, as `docker image ls` reports it.
BASE_IMAGE_MB = 130.0


def installed_bytes(name: str) -> int:
    """Bytes on disk of an installed distribution's files."""
    dist = metadata.distribution(name)
    return sum(
        (Path(str(dist.locate_file(f))).stat().st_size)
        for f in dist.files or []
        if Path(str(dist.locate_file(f))).is_file()
    )


def main() -> None:
    """Print the largest packages and the total."""
    names = [  # the pins; the indented lines under each are its hashes
        line.split("==")[0]
        for line in (ROOT / "requirements" / "serving.txt").read_text().splitlines()
        if "==" in line and not line.startswith(("#", " "))
    ]
    sizes = sorted(((installed_bytes(n), n) for n in names), reverse=True)
    packages = sum(size for size, _ in sizes)
    for size, name in sizes[:12]:
        print(f"{size / 1e6:8.1f} MB  {name}")
    bento = 0
    if len(sys.argv) > 1:
        bento = sum(p.stat().st_size for p in Path(sys.argv[1]).rglob("*") if p.is_file())
    total = packages / 1e6 + bento / 1e6 + BASE_IMAGE_MB
    print(f"{packages / 1e6:8.1f} MB  {len(names)} packages")
    print(f"{bento / 1e6:8.1f} MB  the Bento (code, models)")
    print(f"{BASE_IMAGE_MB:8.1f} MB  base image python:3.11-slim")
    print(f"{total:8.1f} MB  image (uncompressed, estimate)")


if __name__ == "__main__":
    main()
