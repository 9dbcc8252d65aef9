"""keel under plain uvicorn (the other supported server): the lifespan still ends cleanly."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.runtime._harness import running_server
from tests.runtime.factories import SLOW_REQUEST_SECONDS

pytestmark = pytest.mark.runtime

_UNCLEAN = ("Task was destroyed but it is pending", "Exception ignored", "Traceback")


def _uvicorn(port: int) -> list[str]:
    return [
        sys.executable,
        "-X",
        "dev",
        "-m",
        "uvicorn",
        "--factory",
        "tests.runtime.factories:uvicorn_slow_warmup",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--no-server-header",
        "--timeout-graceful-shutdown",
        "10",
    ]


def test_sigterm_under_uvicorn_cancels_pending_warmups_and_finishes_requests(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, command=_uvicorn) as server:
        result: dict[str, object] = {}

        def slow_request() -> None:
            try:
                response = httpx.get(
                    f"{server.base_url}/_test/slow", timeout=SLOW_REQUEST_SECONDS + 10
                )
                result["status"] = response.status_code
            except httpx.HTTPError as exc:
                result["error"] = repr(exc)

        client = threading.Thread(target=slow_request)
        client.start()
        deadline = time.monotonic() + 5
        while "/_test/slow" not in server.get("/_test/hits").json():
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.05)

        server.process.send_signal(signal.SIGTERM)
        client.join(timeout=SLOW_REQUEST_SECONDS + 10)
        code = server.wait_exit(deadline=20)

        logs = server.logs()
        assert result == {"status": 200}, logs
        # uvicorn re-raises SIGTERM after a clean shutdown (measured).
        assert code in (0, -signal.SIGTERM), logs
        # The 30 s warm-up was still pending: the lifespan cancelled and awaited it.
        assert "test_warmup_cancelled" in logs, logs
        assert "lifespan_shutdown_complete" in logs, logs
        for marker in _UNCLEAN:
            assert marker not in logs, logs
