"""Private servers for the cache tests: a throwaway ``redis-server`` and a silent TCP listener.

The shared Redis at 6379 is never stopped or flushed; outage tests kill their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

__all__ = [
    "RedisServer",
    "SilentListener",
    "free_port",
    "redis_server",
    "reply_field",
    "reply_fields",
    "require_programs",
    "silent_listener",
]

_START_DEADLINE = 5.0


def require_programs(*names: str) -> None:
    """Skip the test when a program is missing from PATH; under KEEL_TEST_REQUIRE_BACKENDS, fail."""
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    reason = f"{', '.join(missing)} not on PATH"
    if os.environ.get("KEEL_TEST_REQUIRE_BACKENDS"):
        pytest.fail(f"{reason} but KEEL_TEST_REQUIRE_BACKENDS is set")
    pytest.skip(reason)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on a fixed loopback port, which can be killed and restarted."""

    def __init__(self, port: int, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._workdir = workdir
        self._extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and return once it answers PING."""
        if self._proc is not None:
            raise RuntimeError("already running")
        self._proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._workdir),
                *self._extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_DEADLINE
        while not _pong(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server (an outage, not a shutdown) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused server must be able to die
            proc.kill()
        if proc is not None:
            proc.wait(timeout=_START_DEADLINE)

    def snapshot(self) -> None:
        """Write the data to ``dump.rdb`` now: a later ``start`` comes back with it."""
        if reply_field(self.port, "INFO persistence", "rdb_changes_since_last_save") == "0":
            return
        with socket.create_connection(("127.0.0.1", self.port), timeout=5.0) as sock:
            sock.sendall(b"SAVE\r\n")
            if not sock.recv(64).startswith(b"+OK"):
                raise RuntimeError("SAVE failed")

    def pause(self) -> None:
        """SIGSTOP the server: it keeps every connection open and answers nothing (a hang)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def connections_received(self) -> int:
        """How many connections the server has accepted since it started (ours included)."""
        return int(reply_field(self.port, "INFO stats", "total_connections_received"))


def reply_field(port: int, command: str, field: str) -> str:
    """The ``field:value`` in the text reply to ``command`` (``INFO``, ``CLUSTER INFO``)."""
    fields = reply_fields(port, command)
    if field not in fields:
        raise RuntimeError(f"{command} had no {field}")
    return fields[field]


def reply_fields(port: int, command: str) -> dict[str, str]:
    """Every ``field:value`` line of the text reply to ``command`` on the server at ``port``.

    A raw socket, so it works while a test's own client is broken or closed.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(f"{command}\r\n".encode())
        data = b""
        # A bulk reply: "$<length>\r\n<body>\r\n"; read until the whole body is in.
        while not _complete_bulk(data):
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"{command}: the connection closed before the reply")
            data += chunk
    fields = {}
    for line in data.decode().splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name] = value
    return fields


def _complete_bulk(data: bytes) -> bool:
    header, sep, body = data.partition(b"\r\n")
    if sep and header.startswith(b"-"):
        raise RuntimeError(header[1:].decode())
    if not sep:
        return False
    return len(body) >= int(header[1:]) + 2


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    """A running private ``redis-server``, always terminated on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(free_port(), workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class SilentListener:
    """A socket that accepts TCP connections (kernel backlog) but never answers: a hung server."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.port: int = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def drain(self) -> int:
        """Accept and close every connection waiting in the backlog; return how many."""
        count = 0
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@contextlib.contextmanager
def silent_listener() -> Iterator[SilentListener]:
    """A ``SilentListener`` on a free loopback port, closed on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        yield SilentListener(sock)
    finally:
        sock.close()
