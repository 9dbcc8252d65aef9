"""``DeferredApp``: a worker answers ``/livez`` at once and builds the app while it does.

Importing keel's application (FastAPI, SQLAlchemy, the drivers, cryptography,
argon2 and keel's own modules) takes most of a worker's boot. None of it is
needed to say "this process is alive". So ``keel serve`` hands uvicorn a
``DeferredApp``: it starts building the real app on a thread the moment the
worker loads it, and until the build and the app's lifespan startup are done:

- ``GET``/``HEAD /livez`` is answered here, with the same body and security
  headers as the app's own (liveness: the loop answers);
- ``/readyz`` answers ``503`` ``{"status": "starting"}`` (not ready yet);
- every other request waits for the app (at most the request timeout, then
  a ``503`` problem ``starting``) and is then served by it, unchanged.

Once the app is up every request goes straight to it. If the build fails (the
factory cannot be imported or raises) the worker exits with gunicorn's
"worker failed to boot" status (4), and if the app's lifespan startup fails,
with uvicorn's (3): the master reacts exactly as it did when the app was built
before serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from keel._logging import event
from keel.security.headers import HeaderPolicy

__all__ = ["BUILD_FAILED_EXIT", "STARTUP_FAILED_EXIT", "DeferredApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: gunicorn's WORKER_BOOT_ERROR: the master stops instead of boot-looping.
BUILD_FAILED_EXIT: Final = 4
#: uvicorn's exit status when the lifespan startup fails (gunicorn 27 stops on it too).
STARTUP_FAILED_EXIT: Final = 3

_LIVE_BODY: Final = b'{"status":"ok"}'
_STARTING_BODY: Final = b'{"status":"starting"}'
_DRAINING_BODY: Final = b'{"status":"draining"}'
_JSON: Final = (b"content-type", b"application/json")
_PROBLEM: Final = (b"content-type", b"application/problem+json")

_log = logging.getLogger("keel.server")


def _exit(status: int) -> None:
    # The worker never got an app to serve: nothing in flight to finish, nothing to close.
    logging.shutdown()
    os._exit(status)


class DeferredApp:
    """An ASGI app that serves liveness while ``build()`` runs on a thread, then is that app."""

    def __init__(
        self,
        build: Callable[[], ASGIApp],
        *,
        policy: HeaderPolicy,
        wait_timeout: float,
        exit_process: Callable[[int], None] = _exit,
    ) -> None:
        self._policy = policy
        self._wait_timeout = wait_timeout
        self._exit = exit_process
        self._started_at = time.monotonic()
        self._built: concurrent.futures.Future[ASGIApp] = concurrent.futures.Future()
        self._app: ASGIApp | None = None  # set once the app's lifespan startup is done
        self._ready: asyncio.Event | None = None
        self._inner_lifespan: _Lifespan | None = None
        self._starting: asyncio.Task[None] | None = None
        self._draining = False
        threading.Thread(
            target=self._build, args=(build,), name="keel-app-build", daemon=True
        ).start()

    def begin_drain(self) -> None:
        """From now on /readyz answers 503 and every response closes its connection.

        Called from the worker's SIGTERM handler: it only sets a flag.
        """
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is not None and not self._draining and scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self._draining and scope["type"] == "http":
            # A load balancer takes the instance out on the 503; a keep-alive client
            # reconnects (to another instance) after its in-flight response, never reset.
            send = _closing(send)
            if scope.get("path") == "/readyz" and scope.get("method") in ("GET", "HEAD"):
                await self._answer(scope, send, 503, _DRAINING_BODY, _JSON)
                return
            if app is not None:
                await app(scope, receive, send)
                return
        if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            if scope.get("path") == "/livez":
                await self._answer(scope, send, 200, _LIVE_BODY, _JSON)
                return
            if scope.get("path") == "/readyz":
                await self._answer(scope, send, 503, _STARTING_BODY, _JSON)
                return
        app = await self._wait()
        if app is None:
            await self._starting_problem(scope, send)
            return
        await app(scope, receive, send)

    # -- building ----------------------------------------------------------------------------

    def _build(self, build: Callable[[], ASGIApp]) -> None:
        # Running: from here on nothing (a shutdown before the app is up) can cancel it.
        self._built.set_running_or_notify_cancel()
        try:
            app = build()
        except BaseException as exc:  # noqa: BLE001 - reported, then the worker exits
            self._built.set_exception(exc)
        else:
            self._built.set_result(app)

    async def _wait(self) -> ASGIApp | None:
        if self._ready is None:
            self._ready = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._wait_timeout):
                await self._ready.wait()
        return self._app

    # -- the lifespan --------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - protocol order
            return
        if self._ready is None:
            self._ready = asyncio.Event()
        await send({"type": "lifespan.startup.complete"})
        self._starting = asyncio.get_running_loop().create_task(self._start(), name="keel.start")
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await self._shutdown()
            await send({"type": "lifespan.shutdown.complete"})

    async def _start(self) -> None:
        try:
            app = await asyncio.wrap_future(self._built)
        except Exception as exc:  # noqa: BLE001 - any failure to build is fatal to the worker
            event(
                _log,
                logging.CRITICAL,
                "app_build_failed",
                error=type(exc).__name__,
                detail=str(exc),
            )
            self._exit(BUILD_FAILED_EXIT)
            return
        lifespan = _Lifespan(app)
        self._inner_lifespan = lifespan
        if not await lifespan.startup():
            event(_log, logging.CRITICAL, "app_startup_failed")
            self._exit(STARTUP_FAILED_EXIT)
            return
        self._app = app
        assert self._ready is not None
        self._ready.set()
        # Everything built so far lives as long as the worker (see post_worker_init).
        gc.collect()
        gc.freeze()
        event(
            _log,
            logging.INFO,
            "app_ready",
            pid=os.getpid(),
            seconds=round(time.monotonic() - self._started_at, 3),
            frozen_objects=gc.get_freeze_count(),
        )

    async def _shutdown(self) -> None:
        starting = self._starting
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        if self._inner_lifespan is not None:
            await self._inner_lifespan.shutdown()

    # -- answers before the app ----------------------------------------------------------------

    async def _answer(
        self, scope: Scope, send: Send, status: int, body: bytes, content_type: tuple[bytes, bytes]
    ) -> None:
        headers = self._policy.apply(
            [content_type, (b"content-length", b"%d" % len(body))],
            path=str(scope.get("path", "")),
            https=scope.get("scheme") == "https",
            no_store=True,
        )
        headers.append((b"x-request-id", os.urandom(16).hex().encode("ascii")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        payload = b"" if scope.get("method") == "HEAD" else body
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _starting_problem(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Service Unavailable",
                "status": 503,
                "code": "starting",
                "detail": "The service is starting; try again shortly.",
            },
            separators=(",", ":"),
        ).encode("utf-8")
        await self._answer(scope, send, 503, body, _PROBLEM)


def _closing(send: Send) -> Send:
    """``send`` with ``Connection: close`` on the response: uvicorn then ends the connection."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
            headers.append((b"connection", b"close"))
            message = {**message, "headers": headers}
        await send(message)

    return closing


class _Lifespan:
    """Drives an ASGI app's lifespan protocol from here (the server already did ours)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="keel.app-lifespan")

    async def _run(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        try:
            await self._app(scope, self._incoming.get, self._sent)
        except Exception as exc:  # noqa: BLE001 - an app's lifespan may fail any way
            event(_log, logging.ERROR, "app_lifespan_failed", error=type(exc).__name__)
        finally:
            if not self._started.done():
                self._started.set_result(False)
            if not self._stopped.done():
                self._stopped.set_result(None)

    async def _sent(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if not self._started.done():
                self._started.set_result(kind == "lifespan.startup.complete")
        elif (
            kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed")
            and not self._stopped.done()
        ):
            self._stopped.set_result(None)

    async def startup(self) -> bool:
        await self._incoming.put({"type": "lifespan.startup"})
        return await self._started

    async def shutdown(self) -> None:
        await self._incoming.put({"type": "lifespan.shutdown"})
        await asyncio.shield(self._stopped)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
