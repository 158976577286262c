"""A throw-away PostgreSQL cluster of the test's own, so a test may SIGKILL PostgreSQL.

The shared server on 127.0.0.1:5432 serves every other test and must never be killed;
this one lives in a temporary folder, listens on a free 127.0.0.1 port with its unix
socket in that folder, trusts local connections and is removed afterwards. PostgreSQL
refuses to run as root, so under root (as in CI) its binaries run as the ``postgres``
user of the Debian package.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

from tests.serving.service_process import free_port

__all__ = ["PostgresCluster", "PostgresUnavailable"]

# Override with the folder holding initdb and postgres (e.g. `pg_config --bindir`).
_BIN_ENV = "TONLE_TEST_POSTGRES_BIN"
_SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here, or no user they may run as (the test skips)."""


def _bin_dir() -> Path:
    if os.environ.get(_BIN_ENV):
        return Path(os.environ[_BIN_ENV])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise PostgresUnavailable(f"no /usr/lib/postgresql/*/bin/initdb; set {_BIN_ENV}")
    return Path(found[-1]).parent


def _run_as() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this one) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresUnavailable("running as root and there is no 'postgres' user") from exc


class PostgresCluster:
    """``initdb`` in a temporary folder, then ``postgres`` on 127.0.0.1:``port``.

    :meth:`kill` SIGKILLs the postmaster and every backend at once (a crash: the next
    :meth:`start` runs crash recovery from the WAL); :meth:`start` brings it back on
    the same port and folder. Leaving the ``with`` block stops it and removes the folder.

    Raises:
        PostgresUnavailable: no binaries, or root without a ``postgres`` user.
    """

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self._user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="tonle-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://{_SUPERUSER}@127.0.0.1:{self.port}/postgres"
        self.log_path = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PostgresCluster:
        try:
            if self._user is not None:
                os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", _SUPERUSER,
                       "-A", "trust", "-E", "UTF8", "--no-sync"])  # fmt: skip
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _as_user(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=self.root, **self._as_user()
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}")

    def start(self, timeout_s: float = 60.0) -> float:
        """Start the server (after a :meth:`kill`: with crash recovery) and wait until it
        accepts connections; returns seconds taken."""
        started = time.monotonic()
        command = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                   "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
                   "-c", "synchronous_commit=on", "-c", "fsync=on"]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=log,
                cwd=self.root,
                start_new_session=True,
                **self._as_user(),
            )
        conninfo = f"host=127.0.0.1 port={self.port} user={_SUPERUSER} dbname=postgres"
        while True:
            try:
                with psycopg.connect(conninfo, connect_timeout=2):
                    return time.monotonic() - started
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() - started > timeout_s:
                    self.stop()
                    raise RuntimeError(f"postgres did not start:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once."""
        if self.proc is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            postmaster = psutil.Process(self.proc.pid)
            backends = postmaster.children(recursive=True)
            for process in [postmaster, *backends]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(backends, timeout=10)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL whatever is left after 20 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server log (for failure messages)."""
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes().decode(errors="replace")[-chars:]
        return ""
