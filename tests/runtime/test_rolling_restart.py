"""Zero-loss restarts behind a real proxy: HAProxy, two keel instances, wrk keep-alive load.

Two real ``keel serve`` instances (two workers each) share PostgreSQL and
Redis behind HAProxy, which health-checks ``/readyz``. wrk sends keep-alive
load on authenticated ``GET /users/me`` through the proxy while each instance
in turn gets SIGTERM, exits, starts again and becomes ready: not one request
may fail or answer anything but 2xx. The drain is what makes this hold: the
instance turns unready at once, keeps serving until the proxy has seen it,
closes keep-alive connections after their response, then stops.

The same rig kills one worker with SIGKILL mid-load and reports what that
costs (requests in flight on that worker, which the proxy may retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from keel.db import migrate
from keel.security.keys import generate_key_file
from keel.settings import Settings
from tests.runtime._harness import _end_group, _environment, free_port, server_command
from tests.runtime._proxy import haproxy, require_tools, run_wrk, wrk_result

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(400)]

FACTORY = "keel.api.app:create_app"
PASSWORD = "correct horse battery staple 42"
CONNECTIONS = 16


@dataclass
class Instance:
    name: str
    port: int
    workdir: Path
    env: dict[str, str]
    database_url: str
    process: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                server_command(FACTORY),
                cwd=self.workdir,
                env=_environment(self.port, self.database_url, self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def logs(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")

    def wait_ready(self, deadline: float = 90.0) -> None:
        """Until this instance's own ``/readyz`` says ``ok`` (built, database and Redis up)."""
        end = time.monotonic() + deadline
        assert self.process is not None
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                ready = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json()["status"] == "ok":
                    return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} never became ready:\n{self.logs()}")

    def stop(self) -> int:
        """SIGTERM to the master, as a deploy sends it; its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def end(self) -> None:
        if self.process is not None and self.process.poll() is None:
            _end_group(self.process)


@dataclass
class Rig:
    a: Instance
    b: Instance
    proxy: str
    token: str


@pytest.fixture
def rig(tmp_path: Path, postgres_url: str, redis_url: str, redis_namespace: str) -> Iterator[Rig]:
    require_tools("haproxy", "wrk")
    asyncio.run(asyncio.to_thread(migrate.upgrade, Settings(database_url=postgres_url).database))
    key_file = tmp_path / "keys.json"
    generate_key_file(key_file, "EdDSA")
    env = {
        "REDIS_URL": redis_url,
        "KEEL_CACHE_NAMESPACE": redis_namespace,
        "KEEL_JWT_KEY_FILE": str(key_file),
        "KEEL_AUDIT_KEY": "rolling-restart-audit-key-" + "x" * 32,
        "KEEL_REQUIRE_VERIFIED_EMAIL": "false",
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(tmp_path / "mail.jsonl"),
        "KEEL_PUBLIC_URL": "https://keel.example",
        "KEEL_DRAIN_SECONDS": "3",  # above two failed checks (2 x 500 ms) with room to spare
        "WEB_CONCURRENCY": "2",
    }
    a = Instance("a", free_port(), tmp_path / "a", env, postgres_url)
    b = Instance("b", free_port(), tmp_path / "b", env, postgres_url)
    try:
        for instance in (a, b):
            instance.start()
        for instance in (a, b):
            instance.wait_ready()
        with haproxy(tmp_path, free_port(), [a.port, b.port]) as proxy:
            credentials = {"email": "load@keel.example", "password": PASSWORD}
            assert httpx.post(f"{proxy}/auth/register", json=credentials).status_code == 202
            login = httpx.post(f"{proxy}/auth/login", json=credentials, timeout=10)
            assert login.status_code == 200, login.text
            token = login.json()["access_token"]
            for _ in range(4):  # both instances answer through the proxy
                me = httpx.get(
                    f"{proxy}/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
                )
                assert me.status_code == 200, me.text
            yield Rig(a, b, proxy, token)
    finally:
        for instance in (a, b):
            instance.end()


def test_restarting_each_instance_under_load_loses_nothing(rig: Rig) -> None:
    seconds = 60
    began = time.monotonic()
    load = run_wrk(
        f"{rig.proxy}/users/me",
        seconds=seconds,
        connections=CONNECTIONS,
        headers=[f"Authorization: Bearer {rig.token}"],
    )
    time.sleep(3)
    for instance in (rig.a, rig.b):
        assert instance.stop() == 0, instance.logs()
        instance.start()
        instance.wait_ready()
        time.sleep(2)  # two passing checks: the proxy sends to it again
    restarted_at = time.monotonic() - began
    result = wrk_result(load, timeout=seconds + 30)
    print(
        f"rolling restart: {result.requests} requests, {result.non_2xx} non-2xx, "
        f"{result.socket_errors} socket errors; both restarts done at {restarted_at:.1f} s"
    )
    assert restarted_at < seconds - 1, "the restarts outlasted the load: nothing was proven"
    assert result.requests > 500, result.output
    assert result.non_2xx == 0, result.output
    assert result.socket_errors == 0, result.output
    for instance in (rig.a, rig.b):
        assert "drain_started" in instance.logs()


def test_a_worker_killed_mid_load_costs_at_most_its_requests_in_flight(rig: Rig) -> None:
    seconds = 20
    load = run_wrk(
        f"{rig.proxy}/users/me",
        seconds=seconds,
        connections=CONNECTIONS,
        headers=[f"Authorization: Bearer {rig.token}"],
    )
    time.sleep(4)
    victim = rig.a.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    result = wrk_result(load, timeout=seconds + 30)
    failed = result.non_2xx + result.socket_errors
    print(f"worker kill -9: {result.requests} requests, {failed} failed")
    assert result.requests > 200, result.output
    assert failed <= CONNECTIONS, result.output  # at most what was in flight on that worker
    rig.a.wait_ready()  # gunicorn replaced the worker
    assert victim not in rig.a.worker_pids()
    assert len(rig.a.worker_pids()) == 2
