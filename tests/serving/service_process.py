"""A real ``bentoml serve serving.service:Tonle`` for fault and load tests, and its clients.

The service runs on 127.0.0.1; a test can SIGKILL all of its processes (arbiter and
worker) or SIGTERM it as an orchestrator would, and leaving the ``with`` block always
stops every one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from serving.demo_issuer import ensure_demo_issuer, sign_token
from tests.serving.cds_fixtures import cds_request, shared_store, write_config

__all__ = [
    "CVD",
    "Call",
    "TonleProcess",
    "audited",
    "call",
    "cds_call",
    "closed_loop",
    "free_port",
    "rest_request_bytes",
]

ROOT = Path(__file__).resolve().parents[2]
CVD = "/cds-services/ncd-cvd-risk"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Call:
    """What one client saw: a status (None: no HTTP answer), the request id and timing."""

    status: int | None
    request_id: str | None
    sent: float
    latency_s: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer (advice or an audited no-advice)."""
        return self.status is not None and 200 <= self.status < 300


class TonleProcess:
    """``bentoml serve`` over the fixture models, trusting a demo JWT issuer.

    Args:
        tmp: folder for the issuer keys, the serving config and the server log.
        database_url: the audit store (kept across restarts).
        env: extra environment variables for the service.
        host: the address to bind (clients always connect to 127.0.0.1).
    """

    def __init__(
        self,
        tmp: Path,
        database_url: str,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.tmp = tmp
        self.host = host
        self.database_url = database_url
        self.issuer_dir = tmp / "issuer"
        self._env = {
            **os.environ,
            "BENTOML_HOME": str(shared_store()),
            "TONLE_SERVING_CONFIG": str(write_config(tmp)),
            "TONLE_DATABASE_URL": database_url,
            "TONLE_ALLOWED_ISSUERS": str(ensure_demo_issuer(self.issuer_dir, fhir_servers=[])),
            "TONLE_LOG_LEVEL": "WARNING",
            # No load balancer to wait for: stop at once unless a test asks for a drain.
            "TONLE_SHUTDOWN_DRAIN_S": "0",
            # Not dev mode: the link key must be configured (one for every restart).
            "TONLE_LINK_SECRET": secrets.token_hex(32),
            **(env or {}),
        }
        self._env.pop("TONLE_DEV", None)
        self.log_path = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> TonleProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, ready_timeout_s: float = 120.0) -> float:
        """Start on a fresh port and wait until ``/readyz`` is 200; returns seconds taken."""
        started = time.monotonic()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**self._env, "TONLE_PUBLIC_URL": self.url}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "serving.service:Tonle",
                 "--host", self.host, "--port", str(port)],
                cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        self.wait_ready(ready_timeout_s)
        return time.monotonic() - started

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Poll ``/readyz`` until 200; returns seconds waited. Stops everything and raises
        if the service exits or ``timeout_s`` passes first."""
        assert self.proc is not None
        started = time.monotonic()
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() - started > timeout_s:
                self.stop()
                raise RuntimeError(f"service did not become ready:\n{self.log_tail()}")
            time.sleep(0.2)
        return time.monotonic() - started

    def ready(self) -> bool:
        """``/readyz`` answers 200."""
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        return False

    def worker(self) -> psutil.Process:
        """The worker process that serves requests (the arbiter's child)."""
        assert self.proc is not None
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            if "_bentoml_impl.worker" in " ".join(child.cmdline()):
                return child
        raise RuntimeError("no serving worker found")

    def kill(self) -> None:
        """SIGKILL every process of the service at once (a host or container crash)."""
        self._kill_all()

    def kill_worker(self) -> None:
        """SIGKILL the serving worker only (a crash, an OOM kill); the arbiter starts a new
        one (see :meth:`wait_ready`)."""
        worker = self.worker()
        worker.kill()
        # Dead once a zombie: the arbiter reaps (and replaces) it on its own schedule.
        deadline = time.monotonic() + 10
        with contextlib.suppress(psutil.NoSuchProcess):
            while worker.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
                time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever is left after 30 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        self._kill_all()

    def _kill_all(self) -> None:
        # The arbiter starts each worker in a session of its own: kill them by pid.
        assert self.proc is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            workers = psutil.Process(self.proc.pid).children(recursive=True)
            for process in [*workers, psutil.Process(self.proc.pid)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(workers, timeout=10)
        self.proc.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server log (for failure messages)."""
        return self.log_path.read_bytes().decode(errors="replace")[-chars:]

    def token(self, path: str) -> dict[str, str]:
        """Authorization header with a fresh demo-issuer JWT for ``path``."""
        jwt = sign_token(self.url + path, directory=self.issuer_dir)
        return {"Authorization": f"Bearer {jwt}"}


class _Connection:
    """One keep-alive HTTP/1.1 connection over raw asyncio streams: a Python load client
    must cost far less CPU than the server it loads (httpx costs ~1 ms a call)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def call(self, request: bytes, timeout_s: float) -> Call:
        sent = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                if self.streams is None:
                    self.streams = await asyncio.open_connection(self.host, self.port)
                reader, writer = self.streams
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                status = int(head[9:12])
                fields = dict(
                    line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line
                )
                body = await reader.readexactly(int(fields.get("content-length", "0")))
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.close()
            return Call(None, None, sent, time.monotonic() - sent, type(exc).__name__)
        if fields.get("connection") == "close":
            self.close()
        text = None if status < 300 else body.decode(errors="replace")[:200]
        return Call(status, fields.get("x-request-id"), sent, time.monotonic() - sent, text)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def request_bytes(service: TonleProcess, path: str, body: Any, headers: dict[str, str]) -> bytes:
    """A raw HTTP/1.1 POST of ``body`` as JSON."""
    data = json.dumps(body).encode()
    host = service.url.removeprefix("http://")
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def cds_request_bytes(service: TonleProcess) -> bytes:
    """A CDS Hooks call (full prefetch) with a fresh token."""
    body = cds_request(hookInstance=str(uuid.uuid4()))
    return request_bytes(service, CVD, body, service.token(CVD))


def rest_request_bytes(service: TonleProcess, api_key: str) -> bytes:
    """A REST ``/v1/risk/cvd`` call with an API key."""
    body = {"sex": "male", "age": 62, "smoking": True, "sbp": 165, "total_chol": 6.2,
            "diabetes": False, "bmi": 27.5}  # fmt: skip
    return request_bytes(service, "/v1/risk/cvd", body, {"X-API-Key": api_key})


async def call(service: TonleProcess, request: bytes, timeout_s: float = 30.0) -> Call:
    """Send one raw request on a new connection."""
    connection = _Connection(*_host_port(service))
    try:
        return await connection.call(request, timeout_s)
    finally:
        connection.close()


async def cds_call(service: TonleProcess, timeout_s: float = 30.0) -> Call:
    """One CDS Hooks call on a new connection."""
    return await call(service, cds_request_bytes(service), timeout_s)


def _host_port(service: TonleProcess) -> tuple[str, int]:
    host, port = service.url.removeprefix("http://").split(":")
    return host, int(port)


async def closed_loop(
    service: TonleProcess,
    *,
    clients: int,
    duration_s: float,
    max_calls: int,
    stop: asyncio.Event | None = None,
    timeout_s: float = 30.0,
    interval_s: float = 0.0,
) -> list[Call]:
    """``clients`` keep-alive connections, each sending its next CDS Hooks call when the
    last one returned (and at least ``interval_s`` after it sent the last one, which
    bounds the rate while the service refuses fast). Bounded: stops after
    ``duration_s``, ``max_calls`` calls or once ``stop`` is set."""
    calls: list[Call] = []
    deadline = time.monotonic() + duration_s
    stop = stop or asyncio.Event()

    async def caller() -> None:
        connection = _Connection(*_host_port(service))
        try:
            while time.monotonic() < deadline and len(calls) < max_calls and not stop.is_set():
                answer = await connection.call(cds_request_bytes(service), timeout_s)
                calls.append(answer)
                await asyncio.sleep(max(0.0, answer.sent + interval_s - time.monotonic()))
        finally:
            connection.close()

    await asyncio.gather(*(caller() for _ in range(clients)))
    return calls


def audited(database_url: str, request_ids: Any) -> dict[str, int]:
    """How many audit rows each request id has (read straight from the database)."""
    from sqlalchemy import create_engine, func, select

    from serving.audit import schema

    wanted = set(request_ids)
    table = schema.audit_events
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = select(table.c.request_id, func.count()).group_by(table.c.request_id)
            return {rid: n for rid, n in connection.execute(query) if rid in wanted}
    finally:
        engine.dispose()
