"""The request head is bounded while it is parsed, on a real ``keel serve`` (httptools).

Too many header fields, or a head (request line and fields) larger than
``KEEL_MAX_HEADER_BYTES``, is answered 431 and the connection closed; a head
that never ends costs a worker at most the bound, however much is sent. A JSON
body with too many members is refused as it arrives, before the app reads it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.runtime._harness import RunningServer, exchange, running_server

pytestmark = pytest.mark.runtime

MIB = 1024 * 1024
SLOW_HEADS = 10
SLOW_HEAD_BYTES = 20 * MIB
# Ten heads bounded at 16 KiB each, plus a read buffer each: far below this.
RSS_GROWTH_LIMIT = 6 * MIB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("header-limits")) as running:
        yield running


def _head(*fields: bytes) -> bytes:
    return b"GET /livez HTTP/1.1\r\nHost: keel.test\r\n" + b"".join(fields) + b"\r\n"


def _body_of(data: bytes) -> dict[str, object]:
    _, _, body = data.partition(b"\r\n\r\n")
    parsed: dict[str, object] = json.loads(body)
    return parsed


def _worker_pid(server: RunningServer) -> int:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    (pid,) = (int(p) for p in children.read_text().split())
    return pid


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_head_within_the_bounds_is_served(server: RunningServer) -> None:
    fields = [f"X-Field-{i}: {'v' * 60}\r\n".encode() for i in range(90)]
    reply = exchange(server.port, _head(*fields))
    assert reply.statuses == [200], reply.data[:300]


def test_two_hundred_header_fields_are_refused_with_431(server: RunningServer) -> None:
    fields = [f"X-F{i}: 1\r\n".encode() for i in range(200)]
    reply = exchange(server.port, _head(*fields))
    assert reply.statuses == [431], reply.data[:300]
    assert reply.closed_by_server
    assert _body_of(reply.data)["code"] == "headers_too_large"


def test_a_one_megabyte_head_is_refused_with_431_and_the_connection_closed(
    server: RunningServer,
) -> None:
    reply = exchange(server.port, _head(b"X-Big: " + b"a" * MIB + b"\r\n"))
    assert reply.statuses == [431], reply.data[:300]
    assert reply.closed_by_server
    assert b"application/problem+json" in reply.data


def test_a_long_request_line_counts_towards_the_head(server: RunningServer) -> None:
    reply = exchange(server.port, b"GET /livez?" + b"q" * 64_000 + b" HTTP/1.1\r\n\r\n")
    assert reply.statuses == [431], reply.data[:300]


def _send_slowly(port: int, total: int) -> int:
    """Send an unfinished head of ``total`` bytes in small pieces; return what was sent."""
    sent = 0
    piece = b"X-Slow: " + b"s" * (64 * 1024 - 10) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: keel.test\r\n")
        try:
            while sent < total:
                sock.sendall(piece)
                sent += len(piece)
                time.sleep(0.0005)
        except OSError:  # refused and closed by the server: what a bounded head looks like
            return sent
        # Everything went in: hold the connection (head unfinished) while the caller measures.
        time.sleep(1.0)
    return sent


def test_unfinished_heads_sent_slowly_do_not_grow_the_worker(server: RunningServer) -> None:
    pid = _worker_pid(server)
    for _ in range(3):
        assert server.get("/livez").status_code == 200
    before = _rss_bytes(pid)
    peak = before
    with ThreadPoolExecutor(SLOW_HEADS) as pool:
        futures = [pool.submit(_send_slowly, server.port, SLOW_HEAD_BYTES) for _ in range(10)]
        while not all(f.done() for f in futures):
            with contextlib.suppress(OSError):
                peak = max(peak, _rss_bytes(pid))
            time.sleep(0.02)
        sent = [f.result() for f in futures]
    assert peak - before < RSS_GROWTH_LIMIT, (before, peak)
    assert max(sent) < SLOW_HEAD_BYTES, "the server read every unfinished head to the end"
    assert server.get("/livez").status_code == 200


def test_a_megabyte_of_json_members_is_refused_before_the_app_reads_it(
    server: RunningServer,
) -> None:
    body = b'{"a":1' + b"".join(b',"%x":1' % i for i in range(90_000)) + b"}"
    assert len(body) < MIB
    head = (
        b"POST /_test/echo HTTP/1.1\r\nHost: keel.test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    assert server.get("/_test/pid").status_code == 200  # the app is built (not just /livez)
    started = time.monotonic()
    reply = exchange(server.port, head + body)
    assert reply.statuses == [400], reply.data[:300]
    assert _body_of(reply.data)["code"] == "json_too_complex"
    assert reply.closed_by_server
    assert time.monotonic() - started < 0.5  # parsing and validating it took 0.27-0.8 s
