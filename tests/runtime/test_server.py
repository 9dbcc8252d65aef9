"""keel under gunicorn + uvicorn workers, for real: boot, signals, broken dependencies."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.runtime._harness import RunningServer, running_server, server_command
from tests.runtime.factories import BLOCK_SECONDS, SLOW_REQUEST_SECONDS
from tests.unit.cache._servers import redis_server

pytestmark = pytest.mark.runtime

# Written by CPython when a pending task is garbage-collected or a finaliser fails.
_UNCLEAN = ("Task was destroyed but it is pending", "Exception ignored", "Traceback")
HEARTBEAT_TIMEOUT = 3
WATCH_SECONDS = 4.0


def _events(server: RunningServer) -> list[dict[str, object]]:
    """The JSON lines the server logged (gunicorn's, uvicorn's and keel's)."""
    events = []
    for line in server.logs().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def _eventually(check: Callable[[], bool], deadline: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(interval)
    return check()


@dataclass(frozen=True)
class WarmingObservation:
    """What a client saw in the first seconds of a worker whose warm-up takes 30 s."""

    first_live_at: float  # wall clock, seconds
    pids: list[int]
    statuses: list[int]
    latencies: list[float]
    events: list[dict[str, object]]
    logs: str


@pytest.fixture(scope="module")
def warming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmingObservation]:
    # timeout=3: a worker whose loop stops heartbeating is SIGABRTed within ~3 s,
    # so the watch below would see a new pid if anything blocked the loop that long.
    env = {"KEEL_TIMEOUT": str(HEARTBEAT_TIMEOUT)}
    workdir = tmp_path_factory.mktemp("warming")
    with running_server(workdir, "tests.runtime.factories:slow_warmup", env=env) as s:
        first_live_at = time.time()
        pids, statuses, latencies = [], [], []
        watch_until = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < watch_until:
            started = time.monotonic()
            statuses.append(s.get("/livez", timeout=HEARTBEAT_TIMEOUT + 1).status_code)
            latencies.append(time.monotonic() - started)
            pids.append(s.get("/_test/pid", timeout=HEARTBEAT_TIMEOUT + 1).json()["pid"])
            time.sleep(0.05)
        yield WarmingObservation(first_live_at, pids, statuses, latencies, _events(s), s.logs())


def _event_time(observation: WarmingObservation, name: str) -> float:
    stamps = [e["ts"] for e in observation.events if e.get("event") == name]
    assert len(stamps) == 1, observation.logs
    return datetime.fromisoformat(str(stamps[0])).timestamp()


def test_livez_answers_within_a_second_of_the_worker_accepting(
    warming: WarmingObservation,
) -> None:
    # The master binds (and the kernel queues connections) long before the worker
    # has imported the app, so "accepting" is the worker's own start, logged by
    # post_worker_init right before uvicorn runs the lifespan and starts serving.
    worker_ready = _event_time(warming, "worker_ready")
    assert warming.first_live_at - worker_ready < 1.0, warming.logs


def test_livez_keeps_answering_and_the_worker_is_never_restarted(
    warming: WarmingObservation,
) -> None:
    assert warming.statuses
    assert set(warming.statuses) == {200}
    assert max(warming.latencies) < HEARTBEAT_TIMEOUT
    assert len(set(warming.pids)) == 1
    assert "WORKER TIMEOUT" not in warming.logs
    assert warming.logs.count("Booting worker") == 1
    # The 30 s warm-up was still running the whole time: it has reported nothing.
    assert not [e for e in warming.events if e.get("warmup") == "test_slow_warmup"]


def test_livez_latency_stays_low_while_warmups_run(warming: WarmingObservation) -> None:
    # Nothing on the start-up path may block the loop (the schema check once imported
    # Alembic on it and stalled /livez for over a second).
    assert max(warming.latencies) < 1.0, warming.latencies


def test_sigterm_lets_the_inflight_request_finish_and_runs_lifespan_shutdown(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path) as s:
        result: dict[str, object] = {}

        def slow_request() -> None:
            try:
                response = httpx.get(f"{s.base_url}/_test/slow", timeout=SLOW_REQUEST_SECONDS + 10)
                result["status"], result["body"] = response.status_code, response.json()
            except httpx.HTTPError as exc:  # reported by the assertion below
                result["error"] = repr(exc)

        client = threading.Thread(target=slow_request)
        client.start()
        assert _eventually(lambda: "/_test/slow" in s.get("/_test/hits").json(), deadline=5)

        signalled = time.monotonic()
        s.process.send_signal(signal.SIGTERM)
        client.join(timeout=SLOW_REQUEST_SECONDS + 10)
        code = s.wait_exit(deadline=20)
        stopped_in = time.monotonic() - signalled

        assert result == {"status": 200, "body": {"done": True}}, s.logs()
        assert code == 0, s.logs()
        # The request had at most SLOW_REQUEST_SECONDS left; shutdown adds little.
        assert stopped_in < SLOW_REQUEST_SECONDS + 5, f"stopped after {stopped_in:.1f} s"
        names = [e.get("event") for e in _events(s)]
        assert "lifespan_shutdown_complete" in names, s.logs()
        logs = s.logs()
        for marker in _UNCLEAN:
            assert marker not in logs, logs


def test_a_request_outliving_the_graceful_budget_is_cancelled_before_the_sigkill(
    tmp_path: Path,
) -> None:
    # graceful_timeout 6 s, lifespan reserve 5 s → uvicorn cancels stragglers after 1 s,
    # well before the master's SIGKILL at 6 s, so lifespan shutdown still runs.
    with running_server(tmp_path, env={"KEEL_GRACEFUL_TIMEOUT": "6"}) as s:
        result: dict[str, object] = {}

        def slow_request() -> None:
            try:
                response = httpx.get(f"{s.base_url}/_test/slow", timeout=SLOW_REQUEST_SECONDS + 10)
                result["status"] = response.status_code
            except httpx.HTTPError as exc:
                result["error"] = repr(exc)

        client = threading.Thread(target=slow_request)
        client.start()
        assert _eventually(lambda: "/_test/slow" in s.get("/_test/hits").json(), deadline=5)

        signalled = time.monotonic()
        s.process.send_signal(signal.SIGTERM)
        client.join(timeout=SLOW_REQUEST_SECONDS + 10)
        code = s.wait_exit(deadline=20)
        stopped_in = time.monotonic() - signalled

        assert result == {"status": 500}, s.logs()
        assert code == 0, s.logs()
        assert stopped_in < 6, f"stopped after {stopped_in:.1f} s: the master had to SIGKILL"
        logs = s.logs()
        assert "timeout graceful shutdown exceeded" in logs
        assert "lifespan_shutdown_complete" in [e.get("event") for e in _events(s)], logs
        assert "SIGKILL" not in logs


def test_a_blocked_worker_is_replaced_and_its_stacks_are_dumped(tmp_path: Path) -> None:
    # worker_abort is never called with uvicorn workers; faulthandler (post_worker_init)
    # is what turns the master's SIGABRT into a stack dump naming the blocking frame.
    with running_server(tmp_path, env={"KEEL_TIMEOUT": "2"}) as s:
        blocked_pid = s.get("/_test/pid").json()["pid"]
        with pytest.raises(httpx.HTTPError):  # the worker dies mid-request: empty reply
            s.get("/_test/block", timeout=BLOCK_SECONDS + 5)
        s.wait_until_live()
        assert s.get("/_test/pid").json()["pid"] != blocked_pid

        logs = s.logs()
        assert f"WORKER TIMEOUT (pid:{blocked_pid})" in logs
        assert "Fatal Python error: Aborted" in logs
        assert 'factories.py", line' in logs
        assert " in block" in logs


def test_database_down_keeps_livez_up_and_readyz_503(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://127.0.0.1:1/x"}
    with running_server(tmp_path, env=env) as s:
        assert s.get("/livez").status_code == 200
        ready = s.get("/readyz")
        assert ready.status_code == 503
        # "starting" while the worker still builds the app, then "unavailable": never 200.
        assert ready.json()["status"] in {"starting", "unavailable"}
        assert _eventually(lambda: s.get("/readyz").json()["status"] == "unavailable", 15)
        ready = s.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "unavailable",
            "checks": {"database": "down", "cache": ready.json()["checks"]["cache"]},
        }
        assert s.get("/livez").status_code == 200


def test_redis_outage_degrades_and_recovers(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis") as redis,
        running_server(tmp_path / "keel", env={"REDIS_URL": redis.url}) as s,
    ):

        def readiness() -> tuple[int, str]:
            response = s.get("/readyz")
            return response.status_code, str(response.json()["status"])

        assert _eventually(lambda: readiness() == (200, "ok"), deadline=10), s.logs()
        assert s.get("/livez").status_code == 200

        redis.kill()
        assert s.get("/livez").status_code == 200
        assert s.get("/_test/pid").status_code == 200
        assert _eventually(lambda: readiness() == (200, "degraded"), deadline=5), s.logs()
        assert s.get("/livez").status_code == 200
        assert s.get("/_test/pid").status_code == 200

        redis.start()
        assert _eventually(lambda: readiness() == (200, "ok"), deadline=5), s.logs()


def _live_on_ipv6_loopback(server: RunningServer, deadline: float = 30.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert server.process.poll() is None, server.logs()
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"http://[::1]:{server.port}/livez", timeout=1.0)
            if response.status_code == 200:
                return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("command", "bind"), [("serve", "::1"), ("serve", "[::1]"), ("dev", "[::1]")]
)
def test_ipv6_loopback_is_a_bind_address_with_or_without_brackets(
    tmp_path: Path, command: str, bind: str
) -> None:
    def launch(_: int) -> list[str]:
        return server_command("tests.runtime.factories:app", command)

    with running_server(tmp_path, env={"KEEL_BIND": bind}, wait=False, command=launch) as s:
        assert _live_on_ipv6_loopback(s), s.logs()
        assert not s.accepts_tcp()  # 127.0.0.1: nothing listens there
