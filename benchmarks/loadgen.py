"""Open-loop (fixed-rate) and closed-loop (max throughput) HTTP load, as its own process.

Raw asyncio streams over keep-alive connections: the generator must cost far less CPU
than the server it measures (httpx costs ~1 ms per request in Python). Open-loop
latency is measured from each request's *scheduled* send time, so a stalled server
cannot hide its queueing (no coordinated omission).

Usage:
    python benchmarks/loadgen.py open URL BODY_FILE --rate 100 --duration 10 [--header K:V]
    python benchmarks/loadgen.py closed URL BODY_FILE --connections 8 --duration 10
Prints one JSON object (with every latency in ms under ``latencies_ms`` when given
``--keep-latencies``, e.g. to pool percentiles over several runs). ``--record-ids FILE``
writes the ``X-Request-Id`` of every 2xx answer, one a line, so that a caller can join
them with the audit store; ``ok_2xx_without_id`` counts the 2xx answers that had none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

# Reuse a keep-alive connection only while it is younger than the server's idle timeout
# (uvicorn closes idle connections after 5 s); an older one may already be closed.
_MAX_IDLE_S = 4.0


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.last_used = time.perf_counter()

    async def send(self, request: bytes) -> tuple[int, bytes | None]:
        """Send one request; the answer's status and its ``X-Request-Id`` (None if absent)."""
        self.last_used = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        request_id = None
        for line in head.split(b"\r\n"):
            name = line[:15].lower()
            if name == b"content-length:":
                length = int(line[15:])
            elif name[:13] == b"x-request-id:":
                request_id = line[13:].strip()
        if length:
            await self.reader.readexactly(length)
        return status, request_id


async def _connect(host: str, port: int) -> _Conn:
    reader, writer = await asyncio.open_connection(host, port)
    return _Conn(reader, writer)


class _Requests:
    """The raw request to send, with a fresh bearer token each time when tokens are given."""

    def __init__(self, raw: bytes, tokens: list[str]) -> None:
        self.raw, self.tokens, self.i = raw, tokens, 0

    def next(self) -> bytes:
        if not self.tokens:
            return self.raw
        token = self.tokens[self.i % len(self.tokens)]
        self.i += 1
        head, _, body = self.raw.partition(b"\r\n\r\n")
        return head + f"\r\nAuthorization: Bearer {token}".encode() + b"\r\n\r\n" + body


def _request(url: str, body: bytes, headers: list[str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    lines = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    if not any(h.lower().startswith("content-type:") for h in headers):
        lines.insert(2, "Content-Type: application/json")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return parts.hostname or "127.0.0.1", parts.port or 80, raw


class _Ids:
    """The ``X-Request-Id`` of each 2xx answer, kept only when ``--record-ids`` asks."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.ids: list[bytes] = []
        self.without = 0  # 2xx answers with no id: nothing to join with the audit store

    def add(self, status: int, request_id: bytes | None) -> None:
        if not self.keep or not 200 <= status < 300:
            return
        if request_id is None:
            self.without += 1
        else:
            self.ids.append(request_id)

    def write(self, path: str, summary: dict[str, Any]) -> None:
        with open(path, "wb") as handle:
            handle.writelines(i + b"\n" for i in self.ids)
        summary["ok_2xx_without_id"] = self.without


def _summary(
    latencies: list[float], statuses: dict[int, int], errors: int, wall: float
) -> dict[str, Any]:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {
        "requests": len(latencies) + errors,
        "ok_2xx": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors + sum(n for s, n in statuses.items() if not 200 <= s < 300),
        "throughput_rps": ok / wall if wall else 0.0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": ordered[-1] * 1000 if ordered else float("nan"),
        "mean_ms": statistics.fmean(ordered) * 1000 if ordered else float("nan"),
        "wall_s": wall,
    }


async def open_loop(
    url: str,
    body: bytes,
    rate: float,
    duration: float,
    headers: list[str],
    tokens: list[str],
    keep_latencies: bool = False,
    record_ids: str | None = None,
) -> dict[str, Any]:
    host, port, raw = _request(url, body, headers)
    requests = _Requests(raw, tokens)
    ids = _Ids(record_ids is not None)
    idle: list[_Conn] = [await _connect(host, port) for _ in range(4)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    total = int(rate * duration)
    tasks: list[asyncio.Task[None]] = []
    # How late the generator itself started each call (a busy machine delays it too).
    lags: list[float] = []

    async def one(scheduled: float) -> None:
        nonlocal errors
        lags.append(time.perf_counter() - scheduled)
        conn = idle.pop() if idle else None
        if conn is None or time.perf_counter() - conn.last_used > _MAX_IDLE_S:
            if conn is not None:
                conn.writer.close()
            conn = await _connect(host, port)
        try:
            status, request_id = await asyncio.wait_for(conn.send(requests.next()), 10)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            errors += 1
            conn.writer.close()
            return
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1
        ids.add(status, request_id)
        idle.append(conn)

    start = time.perf_counter()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    summary = _summary(latencies, statuses, errors, wall)
    lags.sort()
    summary["send_lag_p99_ms"] = lags[int(0.99 * (len(lags) - 1))] * 1000 if lags else 0.0
    summary["send_lag_max_ms"] = lags[-1] * 1000 if lags else 0.0
    if keep_latencies:
        summary["latencies_ms"] = [round(x * 1000, 3) for x in latencies]
    if record_ids is not None:
        ids.write(record_ids, summary)
    return summary


async def closed_loop(
    url: str,
    body: bytes,
    connections: int,
    duration: float,
    headers: list[str],
    tokens: list[str],
    record_ids: str | None = None,
) -> dict[str, Any]:
    host, port, raw = _request(url, body, headers)
    requests = _Requests(raw, tokens)
    ids = _Ids(record_ids is not None)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        conn = await _connect(host, port)
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                status, request_id = await asyncio.wait_for(conn.send(requests.next()), 10)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                errors += 1
                conn = await _connect(host, port)
                continue
            latencies.append(time.perf_counter() - sent)
            statuses[status] = statuses.get(status, 0) + 1
            ids.add(status, request_id)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    summary = _summary(latencies, statuses, errors, time.perf_counter() - start)
    if record_ids is not None:
        ids.write(record_ids, summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["open", "closed"])
    parser.add_argument("url")
    parser.add_argument("body_file")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--tokens", help="File of bearer tokens, one per line, each used once.")
    parser.add_argument("--keep-latencies", action="store_true", help="Open loop: list them.")
    parser.add_argument(
        "--record-ids",
        metavar="FILE",
        help="Write the X-Request-Id of each 2xx answer, one a line.",
    )
    args = parser.parse_args()
    with open(args.body_file, "rb") as handle:
        body = handle.read()
    tokens: list[str] = []
    if args.tokens:
        with open(args.tokens, encoding="utf-8") as handle:
            tokens = [line.strip() for line in handle if line.strip()]
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run  # type: ignore[assignment]
    if args.mode == "open":
        result = run(
            open_loop(
                args.url,
                body,
                args.rate,
                args.duration,
                args.header,
                tokens,
                args.keep_latencies,
                args.record_ids,
            )
        )
    else:
        result = run(
            closed_loop(
                args.url,
                body,
                args.connections,
                args.duration,
                args.header,
                tokens,
                args.record_ids,
            )
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
