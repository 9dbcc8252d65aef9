from __future__ import annotations

import asyncio
import logging

import pytest

from keel.runtime.lifecycle import LifecycleState, Supervisor, Warmup
from keel.settings import LifecycleSettings


def _settings(**overrides: float) -> LifecycleSettings:
    values = {
        "warmup_timeout": 0.2,
        "warmup_budget": 5.0,
        "shutdown_timeout": 1.0,
        "readiness_timeout": 0.5,
    }
    values.update(overrides)
    return LifecycleSettings(**values)


def _events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    return [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records]


async def test_start_returns_before_slow_warmups_finish() -> None:
    supervisor = Supervisor(_settings(warmup_timeout=10))
    release = asyncio.Event()

    async def slow() -> None:
        await release.wait()

    supervisor.add_warmup(Warmup("slow", slow))
    await asyncio.wait_for(supervisor.start(), timeout=0.5)
    assert supervisor.state is LifecycleState.RUNNING
    assert "slow" not in supervisor.warmup_results
    release.set()
    await asyncio.wait_for(supervisor.wait_warmups(), timeout=1)
    assert supervisor.warmup_results == {"slow": "ok"}
    await supervisor.stop()


async def test_each_warmup_outcome_is_logged_and_none_stops_the_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="keel.lifecycle")
    supervisor = Supervisor(_settings(warmup_timeout=0.1))

    async def ok() -> None:
        return None

    async def boom() -> None:
        raise RuntimeError("nope")

    async def hang() -> None:
        await asyncio.sleep(30)

    async def patient() -> None:
        await asyncio.sleep(0.2)

    supervisor.add_warmup(Warmup("ok", ok))
    supervisor.add_warmup(Warmup("boom", boom))
    supervisor.add_warmup(Warmup("hang", hang))
    supervisor.add_warmup(Warmup("patient", patient, timeout=2.0))
    await supervisor.start()
    await asyncio.wait_for(supervisor.wait_warmups(), timeout=3)
    assert supervisor.warmup_results == {
        "ok": "ok",
        "boom": "failed",
        "hang": "timeout",
        "patient": "ok",
    }
    names = [name for name, _ in _events(caplog)]
    assert {"warmup_ok", "warmup_failed", "warmup_timeout"} <= set(names)
    assert supervisor.state is LifecycleState.RUNNING
    await supervisor.stop()


async def test_total_budget_caps_every_warmup() -> None:
    supervisor = Supervisor(_settings(warmup_timeout=10, warmup_budget=0.1))

    async def hang() -> None:
        await asyncio.sleep(30)

    supervisor.add_warmup(Warmup("hang", hang, timeout=60))
    await supervisor.start()
    await asyncio.wait_for(supervisor.wait_warmups(), timeout=2)
    assert supervisor.warmup_results == {"hang": "timeout"}
    await supervisor.stop()


async def test_stop_cancels_and_awaits_every_task_then_closes_in_reverse() -> None:
    supervisor = Supervisor(_settings(warmup_timeout=60))
    order: list[str] = []
    cleaned: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append(name)

    async def warm() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append("warmup")

    async def close_db() -> None:
        order.append("database")

    async def close_cache() -> None:
        order.append("cache")

    supervisor.add_warmup(Warmup("warm", warm))
    supervisor.add_closer("database", close_db)
    supervisor.add_closer("cache", close_cache)
    await supervisor.start()
    supervisor.spawn("a", worker("a"))
    supervisor.spawn("b", worker("b"))
    await asyncio.sleep(0.01)
    assert supervisor.pending_tasks == 3
    await supervisor.stop()
    assert sorted(cleaned) == ["a", "b", "warmup"]
    assert order == ["cache", "database"]
    assert supervisor.pending_tasks == 0
    assert supervisor.state is LifecycleState.STOPPED


async def test_a_task_that_ignores_cancellation_does_not_hold_shutdown_past_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(_settings(shutdown_timeout=0.2))
    closed: list[str] = []
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    async def close() -> None:
        closed.append("x")

    supervisor.add_closer("x", close)
    await supervisor.start()
    task = supervisor.spawn("stubborn", stubborn())
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await supervisor.stop()
    assert loop.time() - started < 1.0
    assert closed == ["x"]
    assert "shutdown_tasks_stuck" in [name for name, _ in _events(caplog)]
    release.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_failing_closer_does_not_skip_the_others() -> None:
    supervisor = Supervisor(_settings())
    closed: list[str] = []

    async def bad() -> None:
        raise OSError("disk gone")

    async def good() -> None:
        closed.append("good")

    supervisor.add_closer("good", good)
    supervisor.add_closer("bad", bad)
    await supervisor.start()
    await supervisor.stop()
    assert closed == ["good"]


async def test_no_new_tasks_after_shutdown() -> None:
    supervisor = Supervisor(_settings())
    await supervisor.start()
    await supervisor.stop()

    async def late() -> None:
        return None

    with pytest.raises(RuntimeError, match="shutting down"):
        supervisor.spawn("late", late())


async def test_failed_background_task_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(_settings())
    await supervisor.start()

    async def fails() -> None:
        raise ValueError("x")

    task = supervisor.spawn("fails", fails())
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert ("task_failed", {"task": "fails", "error": "ValueError"}) in _events(caplog)
    await supervisor.stop()


def test_warmups_cannot_be_added_after_start() -> None:
    async def scenario() -> None:
        supervisor = Supervisor(_settings())
        await supervisor.start()

        async def noop() -> None:
            return None

        with pytest.raises(RuntimeError):
            supervisor.add_warmup(Warmup("late", noop))
        await supervisor.stop()

    asyncio.run(scenario())
