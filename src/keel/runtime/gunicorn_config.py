"""gunicorn's settings for ``keel serve``, all derived from ``Settings``: bind, worker count, hooks.

No config file and no command-line arguments: ``gunicorn_options`` is all
gunicorn is told. Facts this module is built around, measured on gunicorn 27
and uvicorn-worker 0.4:

- ``worker_abort`` is never called with keel's worker (it resets SIGABRT), so
  ``post_worker_init`` enables ``faulthandler``: the master's SIGABRT for a
  stuck worker then dumps every thread's stack.
- gunicorn ≥ 25.1 opens a control socket unless ``control_socket_disable``.

Nothing here starts or connects anything at import.
"""

from __future__ import annotations

import faulthandler
import gc
import ipaddress
import logging
import math
import os
from pathlib import Path
from typing import Any, Final

import gunicorn
from gunicorn.glogging import Logger as GunicornLogger

from keel._logging import JsonFormatter, event
from keel.runtime.cgroup import CGROUP_ROOT, PROC_SELF_CGROUP, read_cgroup_limits
from keel.runtime.metrics_hooks import MetricsHooks, deployment_directory
from keel.runtime.worker import KeelWorker
from keel.settings import Settings

__all__ = ["JsonGunicornLogger", "forwarded_allow_ips", "gunicorn_options", "worker_count"]

_log = logging.getLogger("keel.server")

HEARTBEAT_DIR: Final = Path("/dev/shm")  # noqa: S108 - gunicorn creates its heartbeat file with mkstemp

MIB: Final = 1024 * 1024
SMALL_MEMORY_BYTES: Final = 1024 * MIB  # below this, one worker
MEMORY_PER_WORKER_BYTES: Final = 256 * MIB


# -- worker count -------------------------------------------------------------------------


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def worker_count(
    settings: Settings,
    *,
    cgroup_root: Path = CGROUP_ROOT,
    proc_self_cgroup: Path = PROC_SELF_CGROUP,
    available_cpus: int | None = None,
) -> int:
    """How many workers to run.

    ``WEB_CONCURRENCY`` when set. Otherwise ``min(by_cpu, by_memory)``, at least 1:

    - ``by_cpu`` = floor of the cgroup CPU quota (1.5 CPUs → 1), capped by the
      CPUs this process may run on (``sched_getaffinity``); without a quota,
      those CPUs. One uvicorn worker saturates a core; a worker on a fraction
      of a core only adds CFS throttling to the tail latency.
    - ``by_memory`` = 1 below 1 GiB, else ``limit // 256 MiB`` (a worker is ≈ 50
      MiB bare; the rest is headroom for requests); no limit, no cap.

    ``cpu_count()`` alone sees the host's cores inside a container and
    OOM-loops small ones (measured).
    """
    if settings.server.workers is not None:
        return settings.server.workers
    cpus = available_cpus if available_cpus is not None else _available_cpus()
    limits = read_cgroup_limits(cgroup_root, proc_self_cgroup)
    by_cpu = cpus if limits.cpus is None else min(cpus, math.floor(limits.cpus))
    if limits.memory_bytes is None:
        by_memory = by_cpu
    elif limits.memory_bytes < SMALL_MEMORY_BYTES:
        by_memory = 1
    else:
        by_memory = limits.memory_bytes // MEMORY_PER_WORKER_BYTES
    return max(1, min(by_cpu, by_memory))


# -- logging and hooks --------------------------------------------------------------------


class JsonGunicornLogger(GunicornLogger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's logger, writing each line as keel's JSON (SEC-66, SEC-67)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        formatter = JsonFormatter()
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(formatter)


def _on_starting(arbiter: Any) -> None:
    cfg = arbiter.cfg
    event(
        _log,
        logging.INFO,
        "server_starting",
        gunicorn=gunicorn.__version__,
        bind=list(cfg.bind),
        workers=cfg.workers,
        timeout_s=cfg.timeout,
        graceful_timeout_s=cfg.graceful_timeout,
        keepalive_s=cfg.keepalive,
    )


def _when_ready(arbiter: Any) -> None:
    event(
        _log,
        logging.INFO,
        "server_ready",
        listeners=[str(listener) for listener in arbiter.LISTENERS],
        pid=arbiter.pid,
    )


def _post_worker_init(worker: Any) -> None:
    # The master SIGABRTs a worker whose loop stopped heartbeating; with faulthandler
    # on, that prints every thread's stack before the worker dies. The worker has just
    # reset SIGABRT to SIG_DFL, and enable() is a no-op when faulthandler is already on
    # (-X dev, PYTHONFAULTHANDLER), so switch it off first to reinstall the handlers.
    try:
        faulthandler.disable()
        faulthandler.enable(all_threads=True)
    except (OSError, RuntimeError, ValueError, AttributeError) as exc:  # stderr not a real file
        event(_log, logging.WARNING, "faulthandler_unavailable", error=type(exc).__name__)
    # Everything built so far (modules, the app) lives as long as the worker: move it out
    # of the collector's sight, so full collections stay short (they were 100-170 ms
    # here, straight into request p99).
    gc.collect()
    gc.freeze()
    event(_log, logging.INFO, "worker_ready", pid=os.getpid(), frozen_objects=gc.get_freeze_count())


def _worker_abort(worker: Any) -> None:  # pragma: no cover - never called by uvicorn workers
    event(_log, logging.ERROR, "worker_abort", pid=os.getpid())
    faulthandler.dump_traceback(all_threads=True)


# -- the options --------------------------------------------------------------------------


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def forwarded_allow_ips(trusted: tuple[str, ...]) -> str:
    """The trusted-proxy list as gunicorn wants it: strict networks, never ``*``."""
    return ",".join(str(ipaddress.ip_network(t, strict=False)) for t in trusted if t != "*")


def _heartbeat_dir(candidate: Path = HEARTBEAT_DIR) -> str | None:
    """``/dev/shm`` when usable, so the heartbeat never waits on a stalling disk."""
    if candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK):
        return str(candidate)
    return None


def gunicorn_options(settings: Settings) -> dict[str, object]:
    """gunicorn's settings, all derived from ``settings`` (no config file, no CLI args)."""
    server = settings.server
    return {
        "bind": [_bind_address(server.bind, server.port)],
        "workers": worker_count(settings),
        "worker_class": f"{KeelWorker.__module__}.{KeelWorker.__qualname__}",
        "timeout": server.timeout,
        "graceful_timeout": server.graceful_timeout,
        "keepalive": server.keepalive,
        # Recycling drops about one request per recycle (uvicorn #2757): off unless set.
        "max_requests": server.max_requests,
        "max_requests_jitter": server.max_requests_jitter,
        "worker_tmp_dir": _heartbeat_dir(),
        "control_socket_disable": True,
        "forwarded_allow_ips": forwarded_allow_ips(server.trusted_proxies),
        "preload_app": False,
        "reload": False,
        "proc_name": "keel",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": server.log_level.lower(),
        "logger_class": f"{JsonGunicornLogger.__module__}.{JsonGunicornLogger.__qualname__}",
        "capture_output": False,
        "on_starting": _on_starting,
        "when_ready": _when_ready,
        "post_worker_init": _post_worker_init,
        "worker_abort": _worker_abort,
        # Prometheus multiprocess mode: the directory, boots, exits by cause.
        **(
            MetricsHooks(deployment_directory(settings.metrics.directory, server.port)).options(
                _on_starting, _post_worker_init
            )
            if settings.metrics.enabled
            else {}
        ),
    }
