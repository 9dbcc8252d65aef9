"""DeferredApp, driven through the ASGI protocol: what it answers before the app, and after."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import MutableMapping
from typing import Any

from keel.runtime.deferred import BUILD_FAILED_EXIT, STARTUP_FAILED_EXIT, DeferredApp
from keel.security.headers import HeaderPolicy

Message = MutableMapping[str, Any]


class Inner:
    """A tiny ASGI app with a lifespan; records what happened to it."""

    def __init__(self, *, fail_startup: bool = False) -> None:
        self.fail_startup = fail_startup
        self.events: list[str] = []

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.events.append("startup")
                    failed = self.fail_startup
                    await send({"type": f"lifespan.startup.{'failed' if failed else 'complete'}"})
                    if failed:
                        return
                else:
                    self.events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.events.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


class Server:
    """Plays uvicorn: runs the lifespan, sends requests, collects answers."""

    def __init__(self, app: DeferredApp) -> None:
        self.app = app
        self.lifespan_in: asyncio.Queue[Message] = asyncio.Queue()
        self.lifespan_out: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(
            self.app({"type": "lifespan"}, self.lifespan_in.get, self.lifespan_out.put)
        )
        await self.lifespan_in.put({"type": "lifespan.startup"})
        assert (await self.lifespan_out.get())["type"] == "lifespan.startup.complete"

    async def stop(self) -> None:
        await self.lifespan_in.put({"type": "lifespan.shutdown"})
        assert (await self.lifespan_out.get())["type"] == "lifespan.shutdown.complete"
        assert self.task is not None
        await self.task

    async def request(self, method: str, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "scheme": "http", "headers": []}
        await self.app(scope, receive, send)
        return (
            sent[0]["status"],
            dict(sent[0]["headers"]),
            b"".join(m.get("body", b"") for m in sent[1:]),
        )


def _deferred(
    inner: Inner, gate: threading.Event, exits: list[int], *, wait: float = 5.0
) -> DeferredApp:
    def build() -> Inner:
        if not gate.wait(timeout=10):
            raise TimeoutError("gate never opened")
        return inner

    return DeferredApp(
        build, policy=HeaderPolicy(hsts_max_age=0), wait_timeout=wait, exit_process=exits.append
    )


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never")


async def test_before_the_app_livez_and_readyz_are_answered_here() -> None:
    inner, gate, exits = Inner(), threading.Event(), list[int]()
    server = Server(_deferred(inner, gate, exits))
    await server.start()
    status, headers, body = await server.request("GET", "/livez")
    assert (status, body) == (200, b'{"status":"ok"}')
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"cache-control"] == b"no-store"
    assert (await server.request("HEAD", "/livez"))[2] == b""
    status, _, body = await server.request("GET", "/readyz")
    assert (status, body) == (503, b'{"status":"starting"}')
    waiting = asyncio.create_task(server.request("GET", "/users/me"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # it waits for the app
    gate.set()
    assert (await waiting)[2] == b"inner"
    # From now on everything is the app's own, /livez included.
    assert (await server.request("GET", "/livez"))[2] == b"inner"
    await server.stop()
    assert inner.events == ["startup", "GET /users/me", "GET /livez", "shutdown"]
    assert exits == []


async def test_a_request_that_waits_too_long_gets_a_503_problem() -> None:
    inner, gate, exits = Inner(), threading.Event(), list[int]()
    server = Server(_deferred(inner, gate, exits, wait=0.05))
    await server.start()
    status, headers, body = await server.request("POST", "/auth/login")
    assert status == 503
    assert headers[b"content-type"] == b"application/problem+json"
    assert b'"code":"starting"' in body
    gate.set()
    await server.stop()


async def test_a_build_that_fails_exits_the_worker_with_the_boot_error_status() -> None:
    exits: list[int] = []

    def build() -> Inner:
        raise RuntimeError("cannot build")

    server = Server(
        DeferredApp(
            build, policy=HeaderPolicy(hsts_max_age=0), wait_timeout=1, exit_process=exits.append
        )
    )
    await server.start()
    await _until(lambda: exits)
    assert exits == [BUILD_FAILED_EXIT]
    await server.stop()


async def test_a_failed_startup_exits_the_worker_with_uvicorns_status() -> None:
    inner, gate, exits = Inner(fail_startup=True), threading.Event(), list[int]()
    gate.set()
    server = Server(_deferred(inner, gate, exits))
    await server.start()
    await _until(lambda: exits)
    assert exits == [STARTUP_FAILED_EXIT]


async def test_shutdown_while_still_building_does_not_hang() -> None:
    inner, gate, exits = Inner(), threading.Event(), list[int]()
    server = Server(_deferred(inner, gate, exits))
    await server.start()
    await server.stop()
    gate.set()
    assert inner.events == []
