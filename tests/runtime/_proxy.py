"""A real reverse proxy (HAProxy from the distribution) in front of keel instances, and wrk.

HAProxy checks ``GET /readyz`` every 500 ms, each check allowed 3 s (a loaded
instance's readiness answer can be slow; a draining one answers 503 at once),
two failures take an instance out and two successes bring it back; it retries
on the other instance only a request whose connection could not be opened
(the one retry safe for every method: nothing was sent yet), and reuses
server connections. wrk drives keep-alive load through it. Both must be
installed (``.ci/run`` installs them); missing, the test skips, or fails under
``KEEL_TEST_REQUIRE_BACKENDS`` as CI runs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

__all__ = ["WrkResult", "haproxy", "require_tools", "run_wrk", "wrk_result"]

_CONFIG = """\
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1
    retry-on conn-failure
frontend web
    bind 127.0.0.1:{port}
    default_backend keel
backend keel
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    timeout check 3s
    default-server inter 500ms fall 2 rise 2
{servers}
"""


def require_tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (apt-get install {' '.join(missing)})"
        if os.environ.get("KEEL_TEST_REQUIRE_BACKENDS"):
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def haproxy(workdir: Path, port: int, backends: Sequence[int]) -> Iterator[str]:
    """HAProxy on ``127.0.0.1:port`` in front of ``backends``; yields its base URL."""
    servers = "\n".join(f"    server k{i} 127.0.0.1:{p} check" for i, p in enumerate(backends))
    config = workdir / "haproxy.cfg"
    config.write_text(_CONFIG.format(port=port, servers=servers))
    log = (workdir / "haproxy.log").open("wb")
    process = subprocess.Popen(
        ["haproxy", "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((workdir / "haproxy.log").read_text())
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process.poll() is None:
            process.kill()
        log.close()


@dataclass(frozen=True)
class WrkResult:
    requests: int
    non_2xx: int
    socket_errors: int
    output: str


def run_wrk(
    url: str, *, seconds: int, connections: int, headers: Sequence[str] = ()
) -> subprocess.Popen[str]:
    """Start wrk (one thread, keep-alive) against ``url``; read it with :func:`wrk_result`."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    if os.environ.get("KEEL_WRK_SCRIPT"):
        command += ["-s", os.environ["KEEL_WRK_SCRIPT"]]
    for header in headers:
        command += ["-H", header]
    return subprocess.Popen(
        [*command, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wrk_result(process: subprocess.Popen[str], timeout: float) -> WrkResult:
    output, _ = process.communicate(timeout=timeout)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    assert total is not None, output
    return WrkResult(
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, errors.groups())) if errors else 0,
        output=output,
    )
