"""A ``bentoml serve`` child process for the benchmarks, ready when ``/readyz`` says so."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """CPU time (user + system) used so far by ``processes`` (those gone are skipped)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def postgres_cpu_seconds() -> float:
    """CPU time (user + system) so far of every PostgreSQL server process on this
    machine (backends, WAL writer, checkpointer): where a read's storage goes when the
    audit store is PostgreSQL. 0 when none runs here."""
    return cpu_seconds(
        process
        for process in psutil.process_iter(["name"])
        if (process.info["name"] or "").startswith("postgres")
    )


class Server:
    """``bentoml serve TARGET`` on 127.0.0.1; a context manager that waits for readiness."""

    def __init__(
        self,
        target: str,
        env: dict[str, str],
        cwd: Path,
        port: int | None = None,
        ready_timeout_s: float = 180.0,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_timeout_s = ready_timeout_s
        command = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1",
                   "--port", str(self.port)]  # fmt: skip
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the process
        # No SIGTERM drain (TONLE_SHUTDOWN_DRAIN_S): nothing balances load to a benchmark.
        environment = {**os.environ, "TONLE_SHUTDOWN_DRAIN_S": "0", **env}
        if not {"TONLE_LINK_SECRET", "TONLE_LINK_SECRET_FILE"} & environment.keys():
            # Required outside dev mode: a throwaway key, the same for all its workers.
            environment["TONLE_LINK_SECRET"] = secrets.token_hex(32)
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=environment,
            stdout=self.log,
            stderr=self.log,
        )

    def __enter__(self) -> Server:
        deadline = time.time() + self.ready_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(self.log.read().decode()[-3000:])
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not become ready in {self.ready_timeout_s:.0f} s")

    def processes(self) -> list[psutil.Process]:
        """The server's process and all its descendants (workers, their helpers)."""
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and all its workers."""
        return cpu_seconds(self.processes())

    def kernel_counts(self) -> dict[str, int]:
        """Counts the kernel keeps, so far, of the server and all its workers (Linux
        ``/proc``; 0 elsewhere):

        - ``faults``: minor page faults, each a fresh page mapped and zeroed;
        - ``switches``: context switches, each time a thread waited (for the GIL, a
          lock, the network, or its turn on a core);
        - ``preempted``: those of them where a thread was taken off its core.

        Switches are summed over the threads alive now: psutil's ``num_ctx_switches``
        reads only a process's main thread.
        """
        counts = {"faults": 0, "switches": 0, "preempted": 0}
        for process in self.processes():
            proc = Path(f"/proc/{process.pid}")
            try:
                counts["faults"] += int((proc / "stat").read_text().rsplit(")", 1)[1].split()[7])
                tasks = list((proc / "task").iterdir())
            except OSError:  # a worker that just ended
                continue
            for task in tasks:
                try:
                    status = (task / "status").read_text()
                except OSError:  # a thread that just ended
                    continue
                for line in status.splitlines():
                    name, _, value = line.partition(":")
                    if name in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                        counts["switches"] += int(value)
                        if name.startswith("non"):
                            counts["preempted"] += int(value)
        return counts

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
