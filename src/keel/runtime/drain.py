"""The readiness drain: after SIGTERM a worker keeps serving, unready, before it shuts down.

A load balancer stops sending to an instance only after its health check has
seen ``/readyz`` fail; a worker that stops accepting at the first SIGTERM
makes that window's requests fail. So on SIGTERM (gunicorn's master forwards
its own to every worker) the worker:

1. marks the app draining (``DeferredApp.begin_drain``): ``/readyz`` answers
   503 ``draining`` and every response carries ``Connection: close``, so
   keep-alive clients reconnect, to another instance, after their in-flight
   response instead of having the connection reset later;
2. keeps accepting and serving for ``KEEL_DRAIN_SECONDS``;
3. then shuts down as uvicorn always does: stops listening, finishes what is
   in flight within ``timeout_graceful_shutdown``, runs the lifespan shutdown.

A second SIGTERM, SIGINT or SIGQUIT skips the rest of the drain. The drain
comes out of gunicorn's ``graceful_timeout`` (``keel check`` E040 refuses a
drain that leaves no time for the rest).
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

from uvicorn import Config, Server

from keel._logging import event

__all__ = ["DrainingServer"]

_log = logging.getLogger("keel.server")


class DrainingServer(Server):
    """uvicorn's ``Server`` that drains for ``drain_seconds`` on the first SIGTERM."""

    def __init__(
        self,
        config: Config,
        *,
        drain_seconds: float,
        begin_drain: Callable[[], None],
        stopped: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config=config)
        self._drain_seconds = drain_seconds
        self._begin_drain = begin_drain
        self._stopped = stopped
        self._drain_until: float | None = None
        self._drain_logged = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain_seconds > 0 and self._drain_until is None:
            # In a signal handler: set flags only (no logging, no loop calls).
            self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
            self._drain_until = time.monotonic() + self._drain_seconds
            self._begin_drain()
            return
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Graceful shutdown is over; uvicorn may now end the process by re-raising SIGTERM.
        self._stopped()

    async def on_tick(self, counter: int) -> bool:
        until = self._drain_until
        if until is not None and not self.should_exit:
            if not self._drain_logged:
                self._drain_logged = True
                event(_log, logging.INFO, "drain_started", seconds=self._drain_seconds)
            if time.monotonic() >= until:
                event(_log, logging.INFO, "drain_complete")
                self.should_exit = True
        return await super().on_tick(counter)
