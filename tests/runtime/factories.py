"""App factories the runtime tests serve (``keel serve --factory tests.runtime.factories:NAME``).

Each wraps ``create_app`` with test-only routes under ``/_test`` and an outermost
ASGI middleware that records the path of every request the app is handed, so a
test can ask, over a fresh connection, whether a smuggled request ever arrived.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from keel._logging import configure_logging
from keel.api.app import create_app
from keel.runtime.lifecycle import Warmup
from keel.settings import Settings

__all__ = [
    "BLOCK_SECONDS",
    "SLOW_BUILD_SECONDS",
    "SLOW_REQUEST_SECONDS",
    "SLOW_WARMUP_SECONDS",
    "app",
    "broken",
    "slow_build",
    "slow_warmup",
]

SLOW_REQUEST_SECONDS = 3.0
SLOW_WARMUP_SECONDS = 30.0
BLOCK_SECONDS = 10.0
SLOW_BUILD_SECONDS = 3.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RecordPaths:
    """Pure ASGI: append each HTTP request's path to ``hits`` before anything else runs."""

    def __init__(self, app: ASGIApp, hits: list[str]) -> None:
        self.app = app
        self.hits = hits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.hits.append(scope["path"])
        await self.app(scope, receive, send)


def _test_router(hits: list[str]) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/_test/pid")
    async def pid() -> dict[str, int]:
        return {"pid": os.getpid()}

    @router.get("/_test/hits")
    async def seen() -> list[str]:
        return list(hits)

    @router.get("/_test/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(SLOW_REQUEST_SECONDS)
        return {"done": True}

    @router.get("/_test/block")
    async def block() -> dict[str, bool]:
        # Deliberately freezes the event loop: the worker stops heartbeating.
        time.sleep(BLOCK_SECONDS)  # noqa: ASYNC251
        return {"done": True}

    @router.post("/_test/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @router.get("/_hits/{name}")
    async def hit(name: str) -> dict[str, str]:
        return {"hit": name}

    return router


def _build(settings: Settings, warmups: tuple[Warmup, ...] = ()) -> FastAPI:
    hits: list[str] = []
    application = create_app(settings, routers=[_test_router(hits)], warmups=warmups)
    application.add_middleware(RecordPaths, hits=hits)
    return application


def app(settings: Settings) -> FastAPI:
    """keel plus the ``/_test`` routes."""
    return _build(settings)


async def _sleep_through_warmup() -> None:
    try:
        await asyncio.sleep(SLOW_WARMUP_SECONDS)
    except asyncio.CancelledError:
        # Proof, in the log, that shutdown cancelled the warm-up and awaited it.
        logging.getLogger("keel.test").warning("test_warmup_cancelled")
        raise


def slow_warmup(settings: Settings) -> FastAPI:
    """keel plus the ``/_test`` routes and a 30 s warm-up (timeout 60 s)."""
    return _build(settings, (Warmup("test_slow_warmup", _sleep_through_warmup, timeout=60),))


def slow_build(settings: Settings) -> FastAPI:
    """keel plus the ``/_test`` routes, after a factory that takes ``SLOW_BUILD_SECONDS``."""
    time.sleep(SLOW_BUILD_SECONDS)
    return _build(settings)


def broken(settings: Settings) -> FastAPI:
    """A factory that fails: the worker must not serve on without an app."""
    raise RuntimeError("this factory cannot build an app")


def uvicorn_slow_warmup() -> FastAPI:
    """``slow_warmup`` for plain ``uvicorn --factory`` (which passes no arguments)."""
    configure_logging("INFO")
    return slow_warmup(Settings())
