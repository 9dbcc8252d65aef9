"""The master's view of a worker's end (``keel.runtime.metrics_hooks``) and the OOM-kill count."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from keel import metrics
from keel.errors import ConfigurationError
from keel.metrics.exposition import MULTIPROC_ENV, prepare_directory
from keel.runtime.cgroup import read_oom_kills
from keel.runtime.metrics_hooks import (
    MetricsHooks,
    deployment_directory,
    exit_cause,
    mark_clean_stop,
)


@pytest.mark.parametrize(
    ("aborted", "exit_code", "oom", "stopping", "cause"),
    [
        (True, None, False, False, "timeout"),
        (True, 0, True, True, "timeout"),
        (False, 0, False, False, "normal"),
        (False, 1, False, False, "crash"),
        (False, 3, True, True, "crash"),
        (False, None, False, False, "crash"),
        (False, None, True, False, "oom"),
        (False, None, True, True, "oom"),
        (False, None, False, True, "normal"),
    ],
)
def test_exit_cause(
    aborted: bool, exit_code: int | None, oom: bool, stopping: bool, cause: str
) -> None:
    assert (
        exit_cause(aborted=aborted, exit_code=exit_code, oom_kills_rose=oom, stopping=stopping)
        == cause
    )


class Exits:
    """The master's hooks on a private directory, and what they counted."""

    def __init__(self, directory: Path, oom_kills: list[int | None]) -> None:
        self.hooks = MetricsHooks(directory, oom_kills=lambda: oom_kills[0])
        self.oom_kills = oom_kills
        self.counted: list[str] = []

    def end(self, pid: int, *, aborted: bool = False, stopping: bool = False) -> str:
        arbiter = SimpleNamespace(LISTENERS=[] if stopping else ["socket"])
        self.hooks.child_exit(arbiter, SimpleNamespace(pid=pid, aborted=aborted))
        return self.counted[-1]


@pytest.fixture
def exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Exits:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    found = Exits(tmp_path, [0])
    found.hooks._last_oom_kills = 0
    monkeypatch.setattr(metrics, "record_worker_exit", found.counted.append)
    monkeypatch.setattr("keel.runtime.metrics_hooks.forget_process", lambda pid: None)
    return found


def test_a_worker_that_stopped_cleanly_is_normal_and_its_marker_is_removed(
    exits: Exits, tmp_path: Path
) -> None:
    mark_clean_stop()  # as the worker does once uvicorn's shutdown is over
    marker = tmp_path / f"worker-{os.getpid()}.exit"
    assert marker.read_text() == "0"
    assert exits.end(os.getpid()) == "normal"
    assert not marker.exists()


def test_worker_exit_records_the_code_of_the_system_exit_in_flight(
    exits: Exits, tmp_path: Path
) -> None:
    worker = SimpleNamespace(pid=os.getpid())
    try:
        try:
            sys.exit(3)
        finally:
            exits.hooks.worker_exit(None, worker)
    except SystemExit:
        pass
    assert exits.end(os.getpid()) == "crash"


def test_a_worker_killed_outright_is_a_crash_unless_the_oom_count_rose(exits: Exits) -> None:
    assert exits.end(101) == "crash"
    exits.oom_kills[0] = 1
    assert exits.end(102) == "oom"
    assert exits.end(103) == "crash"  # the count did not move since
    assert exits.end(104, aborted=True) == "timeout"
    assert exits.end(105, stopping=True) == "normal"


def test_hooks_keep_gunicorns_arity(tmp_path: Path) -> None:
    from gunicorn.util import get_arity

    options = MetricsHooks(tmp_path).options(lambda arbiter: None, lambda worker: None)
    arity = {"on_starting": 1, "post_worker_init": 1, "worker_exit": 2, "child_exit": 2}
    arity["on_exit"] = 1
    assert {name: get_arity(hook) for name, hook in options.items()} == arity


def test_prepare_directory_empties_only_its_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "old"))
    directory = tmp_path / "metrics"
    directory.mkdir()
    for name in ("counter_1.db", "gauge_livesum_1.db", "worker-1.exit", "notes.txt"):
        (directory / name).write_text("x")
    assert prepare_directory(directory) == directory.resolve()
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]
    assert os.environ[MULTIPROC_ENV] == str(directory.resolve())


@pytest.mark.parametrize("how", ["open to others", "symbolic link"])
def test_prepare_directory_refuses_a_directory_others_could_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "old"))
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    directory = tmp_path / "metrics"
    if how == "symbolic link":
        directory.symlink_to(target)
    else:
        directory.mkdir()
        directory.chmod(0o777)
    (target / "counter_1.db").write_text("x")
    with pytest.raises(ConfigurationError, match="KEEL_METRICS_DIR"):
        prepare_directory(directory)
    assert (target / "counter_1.db").exists()


def test_the_default_directory_is_one_per_deployment_in_memory_when_it_can_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deployment_directory("/srv/metrics", 8000) == Path("/srv/metrics")
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.chdir(tmp_path)
    here = deployment_directory(None, 8000, shared_memory=shm)
    assert here.parent == shm
    assert here.name.startswith("keel-metrics-8000-")
    assert deployment_directory(None, 8001, shared_memory=shm) != here
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    assert deployment_directory(None, 8000, shared_memory=shm) != here
    missing = tmp_path / "no-shm"
    assert deployment_directory(None, 8000, shared_memory=missing) == Path("var/metrics-8000")


def test_the_masters_exit_removes_the_values_and_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir(mode=0o700)
    (directory / "counter_1.db").write_text("x")
    MetricsHooks(directory).on_exit(None)
    assert not directory.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("x")
    MetricsHooks(kept).on_exit(None)
    assert (kept / "notes.txt").exists()


def test_prepare_directory_refuses_once_values_live_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prometheus_client.values  # noqa: F401 - imported without the directory set

    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with pytest.raises(RuntimeError, match="before its directory"):
        prepare_directory(tmp_path)


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_oom_kills_from_cgroup_v2(tmp_path: Path) -> None:
    _write(tmp_path, "cgroup.controllers", "cpu memory\n")
    _write(tmp_path, "app/memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    _write(tmp_path, "proc", "0::/app\n")
    assert read_oom_kills(tmp_path, tmp_path / "proc") == 2


def test_oom_kills_from_cgroup_v1_and_unknown(tmp_path: Path) -> None:
    _write(
        tmp_path, "memory/box/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n"
    )
    _write(tmp_path, "proc", "4:memory:/box\n")
    assert read_oom_kills(tmp_path, tmp_path / "proc") == 5
    assert read_oom_kills(tmp_path / "none", tmp_path / "none") is None
