"""Start keel as a real server process and talk raw HTTP/1.1 to it.

Every process started here runs in its own session (its own process group),
and leaving a ``running_server`` block always ends that group:
SIGTERM first, SIGKILL after a deadline. The shared Redis at 6379 is never
touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = [
    "RawExchange",
    "RunningServer",
    "exchange",
    "free_port",
    "running_server",
    "server_command",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOT_DEADLINE = 30.0
STOP_DEADLINE = 15.0

# Whatever the outer environment sets must not leak into the server under test.
_SCRUBBED = ("WEB_CONCURRENCY", "DATABASE_URL", "REDIS_URL", "PORT", "SECRET_KEY")
_SCRUBBED_PREFIXES = ("KEEL_", "GUNICORN_", "FORWARDED_ALLOW_IPS", "UVICORN_")


def server_command(factory: str, subcommand: str = "serve") -> list[str]:
    """The one place that says how keel is launched (``-X dev``: asyncio debug, all warnings)."""
    return [sys.executable, "-X", "dev", "-m", "keel", subcommand, "--factory", factory]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _end_group(process: subprocess.Popen[bytes], deadline: float = STOP_DEADLINE) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``deadline``."""
    pgid = process.pid  # start_new_session=True: the leader's pid is the group id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=deadline)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=deadline)


@dataclass
class RunningServer:
    """One keel server (gunicorn master + workers) on ``127.0.0.1:port``."""

    process: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path
    client: httpx.Client

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        """GET over a fresh connection (a stale keep-alive one could be closed under us)."""
        return self.client.get(path, timeout=timeout, headers={"Connection": "close"})

    def logs(self) -> str:
        """Everything the server wrote so far, stdout then stderr."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )

    def accepts_tcp(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def wait_until_live(self, deadline: float = BOOT_DEADLINE) -> None:
        """Poll ``/livez`` until it answers 200; fail with the logs if the server dies."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"keel exited with {self.process.returncode} while booting:\n{self.logs()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if self.get("/livez", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"/livez did not answer within {deadline} s:\n{self.logs()}")

    def wait_exit(self, deadline: float = STOP_DEADLINE) -> int:
        return self.process.wait(timeout=deadline)


def _environment(port: int, database_url: str, overrides: Mapping[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _SCRUBBED and not key.startswith(_SCRUBBED_PREFIXES)
    }
    pythonpath = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "PYTHONUNBUFFERED": "1",
            "PORT": str(port),
            "DATABASE_URL": database_url,
            "WEB_CONCURRENCY": "1",
            "KEEL_ENV": "development",
            "KEEL_BIND": "127.0.0.1",
            "KEEL_LOG_LEVEL": "INFO",
        }
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def running_server(
    workdir: Path,
    factory: str = "tests.runtime.factories:app",
    *,
    env: Mapping[str, str] | None = None,
    wait: bool = True,
    command: Callable[[int], list[str]] | None = None,
) -> Iterator[RunningServer]:
    """Run keel on a free loopback port with a private SQLite file; always end its group."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    database_url = f"sqlite:///{workdir / 'keel.sqlite3'}"
    stdout_path, stderr_path = workdir / "stdout.log", workdir / "stderr.log"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            command(port) if command is not None else server_command(factory),
            # Not the checkout: a core dump from a SIGABRTed worker lands in the temp dir.
            cwd=workdir,
            env=_environment(port, database_url, env or {}),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            server = RunningServer(process, port, stdout_path, stderr_path, client)
            if wait:
                server.wait_until_live()
            yield server
    finally:
        _end_group(process)


# -- a private redis-server: the cache tests' helper (tests.unit.cache._servers) -----------


# -- raw HTTP/1.1 ---------------------------------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@dataclass(frozen=True)
class RawExchange:
    """What came back for bytes written on one connection."""

    data: bytes
    closed_by_server: bool

    @property
    def statuses(self) -> list[int]:
        return [int(code) for code in _STATUS_LINE.findall(self.data)]


def exchange(
    port: int, payload: bytes, *, first_byte: float = 5.0, idle: float = 0.5
) -> RawExchange:
    """Write ``payload`` at once; read until the server closes or, once it has answered,
    stays silent for ``idle`` s (``first_byte`` s is allowed for the first answer).

    The client never half-closes: an EOF from our side could make the server drop
    a pipelined request it would otherwise have served.
    """
    data = b""
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(payload)
        while True:
            sock.settimeout(idle if data else first_byte)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    return RawExchange(data, closed)
