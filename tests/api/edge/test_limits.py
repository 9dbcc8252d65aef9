"""SEC-51/SEC-63: body limits, framing refusals and the per-request deadline."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from keel.api.middleware import LimitsMiddleware, RequestBodyTooLarge
from tests.api.edge._app import (
    MAX_BODY,
    Exchange,
    LogCapture,
    Probe,
    build_app,
    call_asgi,
    client,
    http_settings,
    make_scope,
)


def _assert_problem(body: dict[str, Any], status: int, code: str) -> None:
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:keel:problem:{code}"
    assert body["request_id"]


async def test_sec_51_content_length_over_limit_is_413_unread(app: FastAPI, probe: Probe) -> None:
    async with client(app) as http:
        response = await http.post("/size", content=b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["connection"] == "close"
    _assert_problem(response.json(), 413, "payload_too_large")
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert probe.called == []  # refused before the application saw it


async def test_body_at_the_limit_is_accepted(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.post("/size", content=b"x" * MAX_BODY)
    assert response.status_code == 200
    assert response.json() == {"size": MAX_BODY}


async def test_sec_51_streamed_body_over_limit_is_413(app: FastAPI, probe: Probe) -> None:
    produced = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(1000):
            produced += 1
            yield b"y" * 512

    async with client(app) as http:
        response = await http.post("/size", content=chunks())
    assert response.status_code == 413
    _assert_problem(response.json(), 413, "payload_too_large")
    assert probe.called == ["size"]
    assert probe.body_error == ["RequestBodyTooLarge"]
    # Reading stopped at the limit: nothing like the whole 500 KiB was pulled in.
    assert produced <= MAX_BODY // 512 + 2


async def test_streamed_body_under_limit_passes(app: FastAPI) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"z" * 100

    async with client(app) as http:
        response = await http.post("/size", content=chunks())
    assert response.status_code == 200
    assert response.json() == {"size": 300}


async def test_streamed_body_over_limit_into_a_validated_model(app: FastAPI) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            yield b"n" * 500

    async with client(app) as http:
        response = await http.post(
            "/items", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413


async def test_sec_63_transfer_encoding_on_http_1_0_is_400(app: FastAPI, probe: Probe) -> None:
    exchange = await call_asgi(
        app,
        make_scope(
            method="POST",
            path="/size",
            http_version="1.0",
            headers=[("Transfer-Encoding", "chunked")],
        ),
        body=[b"abc"],
    )
    assert exchange.status == 400
    _assert_problem(exchange.json(), 400, "invalid_framing")
    assert exchange.headers["connection"] == "close"
    assert probe.called == []


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "chunked"), ("Content-Length", "0")],
        [("Content-Length", "3"), ("Content-Length", "4")],
        [("Content-Length", "3, 4")],
        [("Content-Length", "-3")],
        [("Content-Length", "+3")],
        [("Content-Length", "0x3")],
        [("Content-Length", "3 3")],
        [("Content-Length", "")],
        [("Content-Length", "\u00b2")],  # superscript two: str.isdigit() says yes
        [("Transfer-Encoding", "gzip, chunked")],
        [("Transfer-Encoding", "chunked, identity")],
        [("Transfer-Encoding", "xchunked")],
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "identity")],
    ],
)
async def test_sec_63_bad_framing_is_400(
    app: FastAPI, probe: Probe, headers: list[tuple[str, str]]
) -> None:
    exchange = await call_asgi(
        app, make_scope(method="POST", path="/size", headers=headers), body=[b"abc"]
    )
    assert exchange.status == 400
    _assert_problem(exchange.json(), 400, "invalid_framing")
    assert probe.called == []


async def test_chunked_in_any_case_is_accepted(app: FastAPI) -> None:
    # Coding names are case-insensitive (RFC 9112 §7); uvicorn frames "Chunked" as chunked.
    exchange = await call_asgi(
        app,
        make_scope(method="POST", path="/size", headers=[("Transfer-Encoding", " Chunked ")]),
        body=[b"abc"],
    )
    assert exchange.status == 200


async def test_repeated_identical_content_length_is_fine(app: FastAPI) -> None:
    exchange = await call_asgi(
        app,
        make_scope(method="POST", path="/size", headers=[("Content-Length", "3, 3")]),
        body=[b"abc"],
    )
    assert exchange.status == 200


async def test_absurd_content_length_is_413(app: FastAPI) -> None:
    exchange = await call_asgi(
        app, make_scope(method="POST", path="/size", headers=[("Content-Length", "9" * 5000)])
    )
    assert exchange.status == 413


async def test_deadline_gives_504_and_cancels_the_handler(
    app: FastAPI, probe: Probe, log: LogCapture
) -> None:
    started = time.monotonic()
    async with client(app) as http:
        response = await http.get("/slow", headers={"X-Request-ID": "slow-1"})
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    body = response.json()
    _assert_problem(body, 504, "deadline_exceeded")
    assert body["request_id"] == "slow-1"
    assert probe.cancelled.is_set()
    assert elapsed < 5
    (warning,) = log.events("request_deadline_exceeded")
    assert warning["path"] == "/slow"
    assert warning["response_started"] is False


async def test_deadline_after_the_response_started_aborts_it(app: FastAPI, probe: Probe) -> None:
    exchange = await call_asgi(app, make_scope(path="/slow-stream"))
    assert exchange.status == 200
    assert b"first chunk" in exchange.body
    assert not exchange.complete  # left unfinished: the server drops the connection
    assert probe.cancelled.is_set()


async def test_fast_requests_are_untouched(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/ok")
    assert response.status_code == 200


async def test_exceptions_from_the_app_propagate() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("inner")

    middleware = LimitsMiddleware(failing, max_body_bytes=10, timeout=1)
    with pytest.raises(LookupError):
        await call_asgi(middleware)


async def test_outer_cancellation_cancels_the_handler() -> None:
    cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def sleepy(scope: Any, receive: Any, send: Any) -> None:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    middleware = LimitsMiddleware(sleepy, max_body_bytes=10, timeout=30)
    task = asyncio.create_task(call_asgi(middleware))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), 1)
    assert not middleware.stragglers or await _drained(middleware)


async def _drained(middleware: LimitsMiddleware) -> bool:
    for _ in range(100):
        if not middleware.stragglers:
            return True
        await asyncio.sleep(0.01)
    return False


async def _response_within(messages: list[Any], seconds: float) -> Exchange:
    for _ in range(int(seconds / 0.01)):
        if any(m["type"] == "http.response.body" and not m.get("more_body") for m in messages):
            return Exchange(list(messages))
        await asyncio.sleep(0.01)
    raise AssertionError(f"no complete response within {seconds} s: {messages}")


async def test_thread_pool_handler_gets_504_on_time() -> None:
    release = threading.Event()

    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        # A sync route blocked in Starlette's thread pool: cancellation cannot reach it.
        await run_in_threadpool(release.wait, 5)

    middleware = LimitsMiddleware(stuck, max_body_bytes=10, timeout=0.05)
    messages: list[Any] = []
    call = asyncio.create_task(call_asgi(middleware, sink=messages))
    try:
        exchange = await _response_within(messages, 2)
        assert exchange.status == 504
    finally:
        release.set()
    await asyncio.wait_for(call, 5)


async def test_handler_with_a_slow_clean_up_still_answers_on_time() -> None:
    release = asyncio.Event()
    cleaned = asyncio.Event()

    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await release.wait()  # a clean-up slower than the deadline
            cleaned.set()

    middleware = LimitsMiddleware(stubborn, max_body_bytes=10, timeout=0.05)
    messages: list[Any] = []
    call = asyncio.create_task(call_asgi(middleware, sink=messages))
    exchange = await _response_within(messages, 2)
    assert exchange.status == 504
    release.set()
    await asyncio.wait_for(call, 2)
    assert cleaned.is_set()
    assert not middleware.stragglers


async def test_no_504_after_a_413_was_sent() -> None:
    async def reads_then_sleeps(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except RequestBodyTooLarge:  # the 413 went out; keep running past the deadline
            await asyncio.sleep(0.2)

    middleware = LimitsMiddleware(reads_then_sleeps, max_body_bytes=4, timeout=0.05)
    exchange = await call_asgi(middleware, make_scope(method="POST"), body=[b"abc", b"def", b"g"])
    assert exchange.status == 413


def test_limits_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        LimitsMiddleware(build_app(), max_body_bytes=-1, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        LimitsMiddleware(build_app(), max_body_bytes=1, timeout=0)
    for members, depth in ((1, None), (None, 1), (0, 1), (1, 0)):
        with pytest.raises(ValueError, match="max_json_members"):
            LimitsMiddleware(
                build_app(),
                max_body_bytes=1,
                timeout=1,
                max_json_members=members,
                max_json_depth=depth,
            )


async def test_settings_drive_the_limits(probe: Probe) -> None:
    app = build_app(http_settings(max_body_bytes=10), probe=probe)
    async with client(app) as http:
        small = await http.post("/size", content=b"0123456789")
        big = await http.post("/size", content=b"0123456789a")
    assert small.status_code == 200
    assert big.status_code == 413
