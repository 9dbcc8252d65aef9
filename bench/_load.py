"""A closed-loop HTTP/1.1 load generator, for machines without ``wrk``.

``python -m bench._load URL --duration S --connections N [--method POST --body B]
[--header "Name: value"]...`` keeps ``N`` keep-alive connections busy for ``S``
seconds (each sends its next request as soon as the previous answer is
complete, as ``wrk`` does) and prints one JSON object: requests, requests per
second, latency percentiles in milliseconds, socket errors and non-2xx/3xx
answers. It runs on uvloop with bare asyncio protocols (no HTTP library), so
the generator costs as little CPU as Python allows; still, on a small machine
it competes with the server for the cores, and it does so alike for every
server measured, which is why benches report ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvloop

__all__ = ["main"]


@dataclass
class _Stats:
    latencies: list[float] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending ``request`` back to back until ``deadline``."""

    def __init__(
        self, request: bytes, stats: _Stats, deadline: float, done: asyncio.Future[None]
    ) -> None:
        self._request = request
        self._stats = stats
        self._deadline = deadline
        self._done = done
        self._transport: Any = None  # uvloop's transports are not asyncio's classes
        self._buffer = bytearray()
        self._sent_at = 0.0
        self._need: int | None = None  # total bytes of the current answer, once known
        self._status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._sent_at = time.perf_counter()
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._need is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self._buffer[:end]).lower()
                self._status = int(head[9:12])
                marker = head.find(b"\r\ncontent-length:")
                if marker < 0:
                    self._fail()  # chunked answers are not expected from these routes
                    return
                stop = head.find(b"\r\n", marker + 2)
                length = int(head[marker + 17 : stop if stop >= 0 else len(head)])
                self._need = end + 4 + length
            if len(self._buffer) < self._need:
                return
            del self._buffer[: self._need]
            self._need = None
            now = time.perf_counter()
            self._stats.latencies.append(now - self._sent_at)
            if not 200 <= self._status < 400:
                self._stats.non_2xx += 1
            if now >= self._deadline:
                self._finish()
                return
            self._send()

    def _fail(self) -> None:
        self._stats.errors += 1
        self._finish()

    def _finish(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if not self._done.done():
            self._done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            if time.perf_counter() < self._deadline:
                self._stats.errors += 1
            self._done.set_result(None)


def _request(url: str, method: str, headers: list[str], body: bytes) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", *headers]
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _run(
    url: str, duration: float, connections: int, method: str, headers: list[str], body: bytes
) -> dict[str, object]:
    host, port, request = _request(url, method, headers, body)
    loop = asyncio.get_running_loop()
    stats = _Stats()
    started = time.perf_counter()
    deadline = started + duration
    waits: list[asyncio.Future[None]] = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        waits.append(done)
        try:
            await loop.create_connection(
                functools.partial(_Connection, request, stats, deadline, done), host, port
            )
        except OSError:
            stats.errors += 1
            done.set_result(None)
    # A server that stops answering: give up a few seconds after the deadline (wrk's --timeout).
    _, pending = await asyncio.wait(waits, timeout=duration + 5.0)
    stats.errors += len(pending)
    elapsed = time.perf_counter() - started
    ordered = sorted(stats.latencies)

    def percentile(share: float) -> float:
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    return {
        "requests": len(ordered),
        "rps": len(ordered) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "max_ms": ordered[-1] * 1000 if ordered else 0.0,
        "socket_errors": stats.errors,
        "non_2xx": stats.non_2xx,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args(argv)
    result = uvloop.run(
        _run(
            args.url,
            args.duration,
            args.connections,
            args.method,
            args.header,
            args.body.encode("utf-8"),
        )
    )
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
