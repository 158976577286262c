"""Start a real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) for one test module.

It listens on a free port of 127.0.0.1 only for HTTP (remote access refused, DICOM
network server off), stores into a temp folder, and is stopped afterwards.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_orthanc() -> None:
    """Skip with a reason when the Debian packages are missing (``make test`` installs them)."""
    if not Path(ORTHANC).exists() or not DICOMWEB_PLUGIN.exists():
        pytest.skip("orthanc / orthanc-dicomweb not installed (make system-deps)")


@contextmanager
def running_orthanc(folder: Path, **extra: object) -> Iterator[str]:
    """Run Orthanc; yields its DICOMweb root URL (``http://127.0.0.1:PORT/dicom-web``).

    ``extra`` adds or overrides Orthanc configuration options (e.g. ``LuaScripts``).
    """
    require_orthanc()
    port = _free_port()
    config = {
        "Name": "tonle-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "DicomPort": _free_port(),
        "HttpDescribeErrors": True,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        **extra,
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {process.returncode}: "
                    + (folder / "orthanc.log").read_text(errors="replace")[-2000:]
                )
            try:
                if httpx.get(f"{base}/system", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not start within 20 s")
            time.sleep(0.1)
        yield f"{base}/dicom-web"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
