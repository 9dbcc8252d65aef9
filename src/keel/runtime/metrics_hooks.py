"""gunicorn hooks for Prometheus's multiprocess mode: the directory, boots and exits by cause.

- ``on_starting`` (master, before any fork): empty the deployment's directory
  and name it in ``PROMETHEUS_MULTIPROC_DIR``, before ``prometheus_client``
  is imported anywhere in the process, so every worker inherits file-backed
  values.
- ``post_worker_init`` (worker): count the boot; start recording.
- ``worker_exit`` (worker, on the way out of ``sys.exit``) and
  ``mark_clean_stop`` (worker, once uvicorn's graceful shutdown is over, just
  before it re-raises SIGTERM and the process ends by that signal): leave the
  exit code in a small marker file. A worker killed outright leaves none.
- ``child_exit`` (master, after reaping): count the exit by cause and drop the
  dead worker's live gauges, so its in-flight count and memory do not linger.

gunicorn gives ``child_exit`` no wait status, so the cause is read from what
the master can see: ``worker.aborted`` (the master's own SIGABRT for a missed
heartbeat: ``timeout``), the marker (exit code 0: ``normal``, else
``crash``), and, for a worker that left no marker (killed by a signal), the
cgroup's OOM-kill count (risen: ``oom``), else ``crash`` — or ``normal`` while
the master itself is stopping, as a worker still booting dies of its SIGTERM.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from keel import metrics
from keel.metrics.exposition import (
    clear_directory,
    close_files,
    forget_process,
    multiprocess_directory,
    prepare_directory,
)
from keel.runtime.cgroup import read_oom_kills

__all__ = ["SHARED_MEMORY", "MetricsHooks", "deployment_directory", "exit_cause", "mark_clean_stop"]

SHARED_MEMORY: Final = Path("/dev/shm")  # noqa: S108 - checked: ours, 0700 (prepare_directory)


def deployment_directory(
    configured: str | None, port: int, *, shared_memory: Path = SHARED_MEMORY
) -> Path:
    """``KEEL_METRICS_DIR``, else one directory per deployment (working directory and port).

    In memory (``/dev/shm``) when it is usable: every metric write is a write to
    a memory-mapped file, and on a disk-backed file the request metrics cost
    about twice as much (measured on ext4: +27 µs against +12 µs of worker CPU per
    ``/users/me``). Else ``var/metrics-<port>`` under the working directory.
    """
    if configured:
        return Path(configured)
    if shared_memory.is_dir() and os.access(shared_memory, os.W_OK | os.X_OK):
        digest = hashlib.sha256(os.fsencode(Path.cwd().resolve())).hexdigest()[:12]
        return shared_memory / f"keel-metrics-{port}-{digest}"
    return Path("var") / f"metrics-{port}"


def exit_cause(
    *, aborted: bool, exit_code: int | None, oom_kills_rose: bool, stopping: bool = False
) -> str:
    """``timeout``, ``normal``, ``crash`` or ``oom``; ``exit_code`` None = no marker left.

    ``stopping``: the master is shutting down and sent every worker SIGTERM; one
    still booting (uvicorn's handlers not yet installed) dies of it at once.
    """
    if aborted:
        return "timeout"
    if exit_code is not None:
        return "normal" if exit_code == 0 else "crash"
    if oom_kills_rose:
        return "oom"
    return "normal" if stopping else "crash"


def _marker(directory: Path, pid: int) -> Path:
    return directory / f"worker-{pid}.exit"


def _leave_marker(code: int) -> None:
    directory = multiprocess_directory()
    if directory is not None:
        with contextlib.suppress(OSError):
            _marker(directory, os.getpid()).write_text(str(code), encoding="ascii")


def mark_clean_stop() -> None:
    """In a worker whose graceful shutdown just ended: the exit that follows is ``normal``."""
    _leave_marker(0)


def _exit_code() -> int:
    """The code of the ``SystemExit`` being raised around ``worker_exit`` (gunicorn's finally)."""
    exc = sys.exc_info()[1]
    if isinstance(exc, SystemExit):
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0 if exc is None else 1


class MetricsHooks:
    """The four hooks, for a deployment whose multiprocess directory is ``directory``."""

    def __init__(
        self, directory: str | Path, *, oom_kills: Callable[[], int | None] = read_oom_kills
    ):
        self.directory = Path(directory)
        self._oom_kills = oom_kills
        self._last_oom_kills: int | None = None

    def on_starting(self, _arbiter: Any) -> None:
        self.directory = prepare_directory(self.directory)
        self._last_oom_kills = self._oom_kills()

    def post_worker_init(self, _worker: Any) -> None:
        metrics.enable()
        metrics.record_worker_boot()
        metrics.sample_process()

    def worker_exit(self, _arbiter: Any, _worker: Any) -> None:
        _leave_marker(_exit_code())
        close_files()

    def on_exit(self, _arbiter: Any) -> None:
        # Values live as long as the master: the next start would empty them anyway.
        close_files()
        clear_directory(self.directory, remove=True)

    def child_exit(self, arbiter: Any, worker: Any) -> None:
        marker = _marker(self.directory, worker.pid)
        try:
            exit_code: int | None = int(marker.read_text(encoding="ascii"))
        except (OSError, ValueError):
            exit_code = None
        marker.unlink(missing_ok=True)
        oom_kills = self._oom_kills() if exit_code is None else None
        rose = (
            oom_kills is not None
            and self._last_oom_kills is not None
            and oom_kills > self._last_oom_kills
        )
        if oom_kills is not None:
            self._last_oom_kills = oom_kills
        cause = exit_cause(
            aborted=bool(getattr(worker, "aborted", False)),
            exit_code=exit_code,
            oom_kills_rose=rose,
            # Arbiter.stop() closes the listeners before it signals the workers.
            stopping=not getattr(arbiter, "LISTENERS", True),
        )
        metrics.record_worker_exit(cause)
        forget_process(worker.pid)

    def options(
        self, on_starting: Callable[[Any], None], post_worker_init: Callable[[Any], None]
    ) -> dict[str, object]:
        """gunicorn's hook options: ``on_starting`` after ours (the directory comes first),
        ``post_worker_init`` before ours, and our two exit hooks."""

        def starting(arbiter: Any) -> None:
            self.on_starting(arbiter)
            on_starting(arbiter)

        def worker_init(worker: Any) -> None:
            post_worker_init(worker)
            self.post_worker_init(worker)

        return {
            "on_starting": starting,
            "post_worker_init": worker_init,
            "worker_exit": self.worker_exit,
            "child_exit": self.child_exit,
            "on_exit": self.on_exit,
        }
