"""gunicorn + uvicorn workers, configured from ``Settings`` (``keel serve``), and ``keel dev``.

The master binds, supervises and never imports the app; each worker builds its
own ``Settings()`` and calls the app factory (``preload_app`` stays off: pooled
connections must not be shared across ``fork``). Facts this module is built
around, measured on gunicorn 27, uvicorn 0.54 and uvicorn-worker 0.4:

- ``KeelWorker`` pins uvicorn's ``httptools`` parser and ``uvloop`` and fails
  loudly when either is missing: uvicorn's fallback, h11, serves the request
  smuggled behind ``Content-Length`` + ``Transfer-Encoding`` (h11 #90, SEC-63).
  The protocol is ``keel.runtime.http_head``'s subclass, which bounds each
  request head while parsing (431 past ``KEEL_MAX_HEADER_FIELDS`` /
  ``KEEL_MAX_HEADER_BYTES``); each worker sets the bounds when it loads.
- uvicorn-worker does not map ``graceful_timeout``; without
  ``timeout_graceful_shutdown`` a long request gets the worker SIGKILLed by the
  master and lifespan shutdown never runs. ``KeelWorker`` sets it a reserve
  below ``graceful_timeout``.
- ``worker_abort`` is never called with this worker (it resets SIGABRT), so
  ``post_worker_init`` enables ``faulthandler``: the master's SIGABRT for a
  stuck worker then dumps every thread's stack.
- gunicorn ≥ 25.1 opens a control socket unless ``control_socket_disable``.

Nothing here starts or connects anything at import.
"""

from __future__ import annotations

import faulthandler
import gc
import importlib
import ipaddress
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

import gunicorn
import uvicorn
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import AppImportError
from gunicorn.glogging import Logger as GunicornLogger
from uvicorn_worker import UvicornWorker

from keel._logging import JsonFormatter, configure_logging, event
from keel.errors import ConfigurationError
from keel.runtime.cgroup import (
    CGROUP_ROOT,
    PROC_SELF_CGROUP,
    CgroupLimits,
    read_cgroup_limits,
)
from keel.runtime.deferred import DeferredApp
from keel.runtime.drain import DrainingServer
from keel.runtime.http_head import HEAD_LIMITED_PROTOCOL, HeadLimits, configure_head_limits
from keel.runtime.metrics_hooks import MetricsHooks, deployment_directory, mark_clean_stop
from keel.security.devkeys import development_key_file, has_configured_key
from keel.security.headers import HeaderPolicy
from keel.settings import Settings

__all__ = [
    "DEFAULT_FACTORY",
    "DEV_FACTORY_ENV",
    "AppFactory",
    "CgroupLimits",
    "JsonGunicornLogger",
    "KeelApplication",
    "KeelWorker",
    "dev",
    "graceful_shutdown_timeout",
    "gunicorn_options",
    "import_factory",
    "lifespan_reserve",
    "read_cgroup_limits",
    "require_fast_stack",
    "serve",
    "share_development_key",
    "worker_count",
]

_log = logging.getLogger("keel.server")

DEFAULT_FACTORY: Final = "keel.api.app:create_app"
# ``keel dev`` hands the factory to uvicorn's reloading child through this variable.
DEV_FACTORY_ENV: Final = "KEEL_DEV_FACTORY"
# Workers build their own Settings() from the environment: this is how they find a key file.
KEY_FILE_ENV: Final = "KEEL_JWT_KEY_FILE"

HEARTBEAT_DIR: Final = Path("/dev/shm")  # noqa: S108 - gunicorn creates its heartbeat file with mkstemp

MIB: Final = 1024 * 1024
SMALL_MEMORY_BYTES: Final = 1024 * MIB  # below this, one worker
MEMORY_PER_WORKER_BYTES: Final = 256 * MIB

# Seconds kept between uvicorn's graceful deadline and the master's SIGKILL, for
# lifespan shutdown (cancel tasks, close cache and engine) to run in.
DEFAULT_LIFESPAN_RESERVE: Final = 3

_FACTORY_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


# -- the fast stack -----------------------------------------------------------------------


def require_fast_stack() -> None:
    """Import ``httptools`` and ``uvloop`` or raise ``ConfigurationError``.

    uvicorn would otherwise fall back to h11 and asyncio, and h11 desyncs on
    ``Content-Length`` + ``Transfer-Encoding`` (SEC-63, measured).
    """
    missing = []
    for module in ("httptools", "uvloop"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigurationError(
            f"keel serves only with uvicorn's httptools parser and uvloop; cannot import "
            f"{', '.join(missing)}. Reinstall from the lock file; keel never falls back to h11."
        )


def graceful_shutdown_timeout(
    graceful_timeout: int, reserve: int = DEFAULT_LIFESPAN_RESERVE
) -> int:
    """uvicorn's ``timeout_graceful_shutdown``: ``reserve`` seconds below gunicorn's budget.

    Requests still running at this deadline are cancelled (their clients get a
    500) so that lifespan shutdown runs before the master SIGKILLs the worker
    at ``graceful_timeout``. Never below one second.
    """
    return max(1, graceful_timeout - max(1, reserve))


def lifespan_reserve(settings: Settings) -> int:
    """Seconds lifespan shutdown may take: the supervisor's deadline, at least the default."""
    return max(DEFAULT_LIFESPAN_RESERVE, math.ceil(settings.shutdown_timeout))


class KeelWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker is untyped
    """uvicorn worker with httptools, uvloop, no Server header and a graceful deadline."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        # httptools, with every request head bounded while it is parsed.
        "http": HEAD_LIMITED_PROTOCOL,
        "loop": "uvloop",
        "lifespan": "on",
        # RFC 9110 §6.6.1: an origin server with a clock MUST send Date.
        "date_header": True,
        "server_header": False,
        # keel's trusted-proxy middleware owns X-Forwarded-*; uvicorn must not rewrite
        # the client address first.
        "proxy_headers": False,
        # keel writes its own access line (escaped JSON, SEC-66).
        "access_log": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Runs in the master before fork: a missing parser stops gunicorn before any worker.
        require_fast_stack()
        super().__init__(*args, **kwargs)
        reserve = getattr(self.app, "lifespan_reserve", DEFAULT_LIFESPAN_RESERVE)
        self.drain_seconds = float(getattr(self.app, "drain_seconds", 0.0))
        # The drain comes out of gunicorn's budget before uvicorn's graceful shutdown starts.
        self.config.timeout_graceful_shutdown = graceful_shutdown_timeout(
            int(self.cfg.graceful_timeout - math.ceil(self.drain_seconds)), int(reserve)
        )
        # Same trust list as keel's middleware, never "*" (it trusts the left-most,
        # caller-written X-Forwarded-For hop).
        self.config.forwarded_allow_ips = [ip for ip in self.cfg.forwarded_allow_ips if ip != "*"]

    async def _serve(self) -> None:
        # uvicorn-worker's own, with keel's draining server (keel.runtime.drain).
        self.config.app = self.wsgi
        begin_drain = getattr(self.wsgi, "begin_drain", lambda: None)
        server = DrainingServer(
            self.config,
            drain_seconds=self.drain_seconds,
            begin_drain=begin_drain,
            stopped=mark_clean_stop,
        )
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


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


# -- gunicorn configuration ---------------------------------------------------------------


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


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _forwarded_allow_ips(trusted: tuple[str, ...]) -> str:
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
        "forwarded_allow_ips": _forwarded_allow_ips(server.trusted_proxies),
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


AppFactory = Callable[[Settings], object]


def _check_factory_ref(ref: str) -> None:
    if not _FACTORY_REF.match(ref):
        raise ConfigurationError(
            f"app factory must look like 'package.module:callable', got {ref!r}"
        )


def import_factory(ref: str) -> AppFactory:
    """Import ``module:callable``; ``AppImportError`` (gunicorn exits 4, no boot loop) if absent."""
    _check_factory_ref(ref)
    module_name, _, attribute = ref.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise AppImportError(f"cannot import the app factory {ref!r}: {exc}") from exc
    if not callable(target):
        raise AppImportError(f"the app factory {ref!r} is not callable")
    factory: AppFactory = target
    return factory


class KeelApplication(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn configured from a dict; the app is built in each worker.

    ``BaseApplication`` (unlike ``Application``) reads no ``gunicorn.conf.py``,
    no ``GUNICORN_CMD_ARGS`` and no ``sys.argv``: the options are all there is.
    """

    def __init__(
        self,
        options: Mapping[str, object],
        *,
        factory: str = DEFAULT_FACTORY,
        lifespan_reserve: int = DEFAULT_LIFESPAN_RESERVE,
        drain_seconds: float = 0.0,
    ) -> None:
        _check_factory_ref(factory)
        self.options = dict(options)
        self.factory = factory
        # Read by KeelWorker (it receives this object as ``app``).
        self.lifespan_reserve = lifespan_reserve
        self.drain_seconds = drain_seconds
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> object:
        """In the worker: ``Settings()`` from the environment, and the factory's app, deferred.

        The factory is imported and called on a thread while the worker already
        answers ``/livez`` (``keel.runtime.deferred``): importing the app is most
        of a worker's boot, and liveness needs none of it.
        """
        settings = Settings()
        configure_logging(settings.log_level)
        _bound_heads(settings)
        reference = self.factory

        def build() -> Any:
            return import_factory(reference)(settings)

        return DeferredApp(
            build,
            policy=HeaderPolicy(hsts_max_age=settings.hsts_max_age),
            wait_timeout=settings.request_timeout,
        )


def share_development_key(settings: Settings) -> None:
    """In development without a configured signing key, give every worker the same one.

    Runs in the master before any worker exists: the development key file
    (``keel.security.devkeys``) is created or read, and named in this
    process's environment, which the workers inherit. Every worker then signs
    and accepts the same tokens, and so does the next start in the same
    directory. Production and configured keys are left alone.
    """
    if settings.is_production or has_configured_key(settings.tokens):
        return
    development = development_key_file(settings.tokens)
    os.environ[KEY_FILE_ENV] = str(development.path)
    event(
        _log,
        logging.INFO,
        "jwt_development_key_file",
        path=str(development.path),
        kid=development.keys.current.kid,
        created=development.created,
        detail="no signing key configured: every worker uses this development key file; "
        "production needs KEEL_JWT_KEY_FILE",
    )


def serve(settings: Settings, *, factory: str = DEFAULT_FACTORY) -> None:
    """Run gunicorn with keel's workers until it is told to stop (``keel serve``)."""
    require_fast_stack()
    configure_logging(settings.log_level)
    share_development_key(settings)
    application = KeelApplication(
        gunicorn_options(settings),
        factory=factory,
        lifespan_reserve=lifespan_reserve(settings),
        drain_seconds=settings.effective_drain_seconds,
    )
    application.run()


# -- development ----------------------------------------------------------------------------


def _bound_heads(settings: Settings) -> None:
    """Set this process's request-head bounds; runs before the worker accepts anything."""
    server = settings.server
    configure_head_limits(HeadLimits(server.max_header_fields, server.max_header_bytes))


def _dev_app() -> object:
    """uvicorn's reloading child calls this (``factory=True``) to build the app."""
    settings = Settings()
    configure_logging(settings.log_level)
    _bound_heads(settings)
    return import_factory(os.environ.get(DEV_FACTORY_ENV, DEFAULT_FACTORY))(settings)


def dev(settings: Settings, *, factory: str = DEFAULT_FACTORY) -> None:
    """Run one uvicorn process that reloads on code changes (``keel dev``); never in production."""
    if settings.is_production:
        raise ConfigurationError("keel dev is refused when KEEL_ENV=production; use keel serve")
    require_fast_stack()
    _check_factory_ref(factory)
    share_development_key(settings)
    server = settings.server
    os.environ[DEV_FACTORY_ENV] = factory
    uvicorn.run(
        f"{__name__}:_dev_app",
        factory=True,
        reload=True,
        host=server.bind,
        port=server.port,
        log_config=None,
        timeout_keep_alive=server.keepalive,
        timeout_graceful_shutdown=graceful_shutdown_timeout(
            server.graceful_timeout, lifespan_reserve(settings)
        ),
        forwarded_allow_ips=_forwarded_allow_ips(server.trusted_proxies),
        **KeelWorker.CONFIG_KWARGS,
    )
