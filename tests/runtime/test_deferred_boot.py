"""A worker answers ``/livez`` while it is still building the app, and never serves without one."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.runtime._harness import running_server
from tests.runtime.factories import SLOW_BUILD_SECONDS

pytestmark = pytest.mark.runtime


def test_livez_answers_while_the_app_is_built_and_other_requests_wait_for_it(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, "tests.runtime.factories:slow_build") as s:
        began = time.monotonic()
        live = s.get("/livez")
        assert live.status_code == 200
        assert live.json() == {"status": "ok"}
        # The same security headers as the app's own answers, and a request id.
        assert live.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in live.headers["content-security-policy"]
        assert live.headers["cache-control"] == "no-store"
        assert len(live.headers["x-request-id"]) == 32
        assert "server" not in live.headers
        starting = s.get("/readyz")
        assert starting.status_code == 503
        assert starting.json() == {"status": "starting"}
        # A real route waits for the app instead of failing.
        waited = s.get("/_test/pid", timeout=30.0)
        assert waited.status_code == 200
        assert time.monotonic() - began < SLOW_BUILD_SECONDS + 15
        assert s.get("/readyz").json()["status"] == "ok"
        assert '"app_ready"' in s.logs()


def test_a_factory_that_fails_stops_the_server(tmp_path: Path) -> None:
    with running_server(tmp_path, "tests.runtime.factories:broken", wait=False) as s:
        code = s.wait_exit(deadline=30)
        assert code != 0
        logs = s.logs()
        assert '"app_build_failed"' in logs
        assert "this factory cannot build an app" in logs
        with pytest.raises(httpx.HTTPError):
            s.get("/livez", timeout=1.0)
