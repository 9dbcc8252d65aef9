"""Prometheus metrics under a real ``keel serve`` with two workers (multiprocess mode).

One server for the whole module, driven in order: warm-ups that time out, traffic
spread over both workers, a worker killed with SIGKILL, a worker whose loop
blocks past the heartbeat timeout, a worker stopped with SIGTERM, then the
server's own graceful stop.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keel.api.metrics import SAMPLE_INTERVAL
from tests.runtime._harness import RunningServer, running_server
from tests.runtime._workers import served_by, spread, worker_pids
from tests.runtime.factories import BLOCK_SECONDS

pytestmark = pytest.mark.runtime

TOKEN = "metrics-" + "k3Jq9vXw2LmT7pRz4NbY8cHd6FsG1aUe"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORKERS = 2
WARMUP = "test_slow_warmup"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition: (name, labels) → value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum of ``metric`` over every sample whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == metric and wanted <= ls)


def scrape(server: RunningServer) -> str:
    response = server.client.get("/metrics", headers={**AUTH, "Connection": "close"}, timeout=5)
    assert response.status_code == 200, response.text
    return response.text


def replaced(samples: Samples) -> bool:
    """Every worker that ended has been replaced (and its replacement counted its boot)."""
    exits = total(samples, "keel_worker_exits_total")
    return total(samples, "keel_worker_boots_total") == WORKERS + exits


def eventually(server: RunningServer, check: Callable[[Samples], bool], deadline: float) -> Samples:
    end = time.monotonic() + deadline
    while True:
        try:
            samples = parse(scrape(server))
        except (httpx.HTTPError, AssertionError):
            samples = {}
        if samples and check(samples):
            return samples
        if time.monotonic() > end:
            raise AssertionError(f"metrics never matched:\n{samples}\n{server.logs()[-4000:]}")
        time.sleep(0.1)


class Deployment:
    def __init__(self, server: RunningServer, directory: Path) -> None:
        self.server = server
        self.directory = directory


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("metrics")
    env = {
        "WEB_CONCURRENCY": str(WORKERS),
        "KEEL_METRICS_TOKEN": TOKEN,
        # The test warm-up sleeps 30 s: a 0.5 s budget makes it time out in every worker.
        "KEEL_WARMUP_BUDGET": "0.5",
        "KEEL_TIMEOUT": "2",
        "KEEL_METRICS_DIR": str(workdir / "metrics"),
    }
    with running_server(workdir, "tests.runtime.factories:slow_warmup", env=env) as server:
        yield Deployment(server, workdir / "metrics")


def test_metrics_are_kept_per_worker_in_the_deployment_directory(deployment: Deployment) -> None:
    samples = eventually(
        deployment.server,
        lambda s: total(s, "keel_warmup_total", name=WARMUP, outcome="timeout") == WORKERS,
        deadline=15,
    )
    assert total(samples, "keel_worker_boots_total") == WORKERS
    assert total(samples, "keel_warmup_duration_seconds_count", name=WARMUP) == WORKERS
    files = {path.name for path in deployment.directory.iterdir()}
    for pid in worker_pids(deployment.server):
        assert f"counter_{pid}.db" in files


def test_requests_from_both_workers_add_up(deployment: Deployment) -> None:
    server = deployment.server
    time.sleep(SAMPLE_INTERVAL + 0.2)  # every earlier /livez (the boot probes) is written
    earlier = parse(scrape(server))
    before = total(earlier, "keel_http_requests_total", route="/livez")

    def live(request_id: str) -> int:
        headers = {"X-Request-ID": request_id, "Connection": "close"}
        return server.client.get("/livez", headers=headers, timeout=5).status_code

    statuses = spread(server, live, "livez", workers=WORKERS, per_round=50)
    assert set(statuses) == {200}
    assert len(set(served_by(server, "livez-").values())) == WORKERS
    # Each worker writes its counts every second: the sum reaches exactly what was sent.
    after = eventually(
        server,
        lambda s: total(s, "keel_http_requests_total", route="/livez") - before >= len(statuses),
        deadline=5,
    )
    assert total(after, "keel_http_requests_total", route="/livez") - before == len(statuses)
    timed = total(after, "keel_http_request_duration_seconds_count", route="/livez")
    assert timed - total(
        earlier, "keel_http_request_duration_seconds_count", route="/livez"
    ) == len(statuses)


def test_labels_hold_route_templates_never_paths_or_ids(deployment: Deployment) -> None:
    server = deployment.server
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for user_id in ids:
        assert server.get(f"/users/{user_id}").status_code == 404
        assert server.get(f"/admin/users/{user_id}").status_code == 401
        assert server.get(f"/_hits/{user_id}").status_code == 200
    samples = eventually(
        server,
        lambda s: (
            total(s, "keel_http_requests_total", route="/_hits/{name}") >= len(ids)
            and total(s, "keel_http_requests_total", route="/admin/users/{user_id}") >= len(ids)
            and total(s, "keel_http_requests_total", route="unmatched", status="404") >= len(ids)
        ),
        deadline=5,
    )
    text = scrape(server)
    for user_id in ids:
        assert user_id not in text
    routes = {dict(labels).get("route") for (name, labels) in samples} - {None}
    assert not any(any(c.isdigit() for c in str(route)) for route in routes), routes


def test_a_wrong_token_gets_a_401_problem(deployment: Deployment) -> None:
    response = deployment.server.client.get(
        "/metrics", headers={"Authorization": "Bearer " + "x" * 40, "Connection": "close"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "metrics_unauthorized"


def test_a_killed_worker_counts_as_a_crash_and_leaves_no_live_series(
    deployment: Deployment,
) -> None:
    server = deployment.server
    victim = int(server.get("/_test/pid").json()["pid"])
    before = parse(scrape(server))
    assert total(before, "keel_process_resident_memory_bytes", pid=str(victim)) > 0
    os.kill(victim, signal.SIGKILL)
    samples = eventually(
        server,
        lambda s: total(s, "keel_worker_exits_total", cause="crash") == 1 and replaced(s),
        deadline=15,
    )
    assert total(samples, "keel_worker_exits_total", cause="normal") == 0
    live = {
        dict(labels)["pid"]
        for (name, labels) in samples
        if name == "keel_process_resident_memory_bytes"
    }
    assert str(victim) not in live
    assert len(live) == WORKERS
    # Only the scrape itself is in flight (workers publish theirs every second): nothing
    # the dead worker held lingers.
    eventually(server, lambda s: total(s, "keel_http_requests_in_flight") == 1, deadline=5)
    # Its requests still count in the totals.
    assert total(samples, "keel_http_requests_total", route="/livez") >= total(
        before, "keel_http_requests_total", route="/livez"
    )


def test_a_worker_killed_for_a_missed_heartbeat_counts_as_a_timeout(
    deployment: Deployment,
) -> None:
    server = deployment.server
    with pytest.raises(httpx.HTTPError):  # the worker dies mid-request: empty reply
        server.get("/_test/block", timeout=BLOCK_SECONDS + 5)
    samples = eventually(
        server,
        lambda s: total(s, "keel_worker_exits_total", cause="timeout") == 1 and replaced(s),
        deadline=15,
    )
    assert total(samples, "keel_worker_exits_total", cause="crash") == 1


def test_a_worker_stopped_with_sigterm_exits_normally(deployment: Deployment) -> None:
    server = deployment.server
    worker = int(server.get("/_test/pid").json()["pid"])
    os.kill(worker, signal.SIGTERM)
    samples = eventually(
        server,
        lambda s: total(s, "keel_worker_exits_total", cause="normal") == 1 and replaced(s),
        deadline=15,
    )
    assert total(samples, "keel_worker_exits_total", cause="crash") == 1
    assert total(samples, "keel_worker_exits_total", cause="timeout") == 1


def test_the_servers_own_stop_is_clean_and_leaves_no_values(deployment: Deployment) -> None:
    # Runs last in the module: ends the server.
    server = deployment.server
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    logs = server.logs()
    assert logs.count("was sent SIGTERM") >= WORKERS
    assert not deployment.directory.exists()
    assert "ResourceWarning" not in logs
    assert "Traceback" not in logs
