"""``KeelWorker``: the uvicorn worker gunicorn runs, and the graceful deadline it keeps.

Facts this module is built around, measured on gunicorn 27, uvicorn 0.54 and
uvicorn-worker 0.4:

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

Nothing here starts or connects anything at import.
"""

from __future__ import annotations

import importlib
import math
import sys
from typing import Any, ClassVar, Final

from gunicorn.arbiter import Arbiter
from uvicorn_worker import UvicornWorker

from keel.errors import ConfigurationError
from keel.runtime.drain import DrainingServer
from keel.runtime.http_head import HEAD_LIMITED_PROTOCOL
from keel.runtime.metrics_hooks import mark_clean_stop
from keel.settings import Settings

__all__ = [
    "DEFAULT_LIFESPAN_RESERVE",
    "KeelWorker",
    "graceful_shutdown_timeout",
    "lifespan_reserve",
    "require_fast_stack",
]

# Seconds kept between uvicorn's graceful deadline and the master's SIGKILL, for
# lifespan shutdown (cancel tasks, close cache and engine) to run in.
DEFAULT_LIFESPAN_RESERVE: Final = 3


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
    return max(DEFAULT_LIFESPAN_RESERVE, math.ceil(settings.lifecycle.shutdown_timeout))


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
