"""The readiness drain, on a real ``keel serve`` with two workers and real signals.

After SIGTERM to the master: ``/readyz`` turns 503 ``draining`` at once while
requests keep being served, every response says ``Connection: close`` (a
keep-alive client finishes its request and reconnects, nothing is reset), and
the server exits 0 once the drain and the graceful shutdown are done.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from pathlib import Path

from tests.runtime._harness import RunningServer, running_server

DRAIN = 3.0


def _get(connection: http.client.HTTPConnection, path: str) -> tuple[int, str | None, bytes]:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    return response.status, response.getheader("connection"), body


def _fresh(server: RunningServer, path: str) -> tuple[int, str | None, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        return _get(connection, path)
    finally:
        connection.close()


def test_sigterm_drains_unready_then_exits_cleanly(tmp_path: Path) -> None:
    env = {"WEB_CONCURRENCY": "2", "KEEL_DRAIN_SECONDS": str(DRAIN)}
    with running_server(tmp_path, env=env) as server:
        # Both workers serving (a worker still booting when SIGTERM comes simply exits).
        deadline = time.monotonic() + 60
        while server.logs().count("Application startup complete.") < 2:
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.1)
        assert _fresh(server, "/readyz")[0] in (200, 503)  # ready or still warming up
        kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        status, connection_header, _ = _get(kept, "/livez")
        assert (status, connection_header) == (200, None)  # keep-alive before the signal

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)

        served = 0
        while time.monotonic() - signalled < DRAIN - 1.0:
            status, connection_header, body = _fresh(server, "/readyz")
            assert status == 503, server.logs()
            assert json.loads(body) == {"status": "draining"}
            assert connection_header == "close"
            status, connection_header, _ = _fresh(server, "/livez")
            assert (status, connection_header) == (200, "close")
            served += 1
            time.sleep(0.2)
        assert served >= 5
        # The connection opened before the signal: its next request is answered, then closed.
        status, connection_header, _ = _get(kept, "/livez")
        assert (status, connection_header) == (200, "close")
        kept.close()

        code = server.wait_exit(deadline=30)
        stopped_in = time.monotonic() - signalled
        assert code == 0, server.logs()
        assert DRAIN <= stopped_in < DRAIN + 10, f"stopped after {stopped_in:.1f} s"
        events = [
            json.loads(line).get("event")
            for line in server.logs().splitlines()
            if line.startswith("{")
        ]
        assert events.count("drain_started") == 2, server.logs()  # one per worker
        assert "SIGKILL" not in server.logs()


def test_without_a_drain_sigterm_stops_at_once(tmp_path: Path) -> None:
    with running_server(tmp_path, env={"KEEL_DRAIN_SECONDS": "0"}) as server:
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert server.wait_exit(deadline=30) == 0, server.logs()
        assert time.monotonic() - signalled < DRAIN
        assert "drain_started" not in server.logs()
