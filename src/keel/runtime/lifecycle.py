"""The lifespan supervisor: every task keel starts is owned, timed and cancelled here.

States: ``created → starting → running → stopping → stopped``.

- Required steps run inline during startup and must be fast (they never touch
  the network: the engine and cache are lazy).
- Warm-ups run as tracked background tasks, each under its own timeout, all
  under a total budget; each logs ``warmup_ok``, ``warmup_failed`` or
  ``warmup_timeout``. A failing warm-up never stops the app.
- Every task started through ``spawn`` is held by a strong reference (RUF006)
  and, at shutdown, cancelled and awaited within a deadline, after which the
  closers (cache, engine) run in reverse order of registration. Under uvicorn
  a task that is not awaited in the lifespan never runs its ``finally``
  (measured on uvicorn 0.54), so this is the only clean place to end them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import Any

from keel._clock import Clock, SystemClock
from keel._logging import event
from keel.metrics import record_task_failure, record_warmup
from keel.settings import LifecycleSettings

__all__ = ["LifecycleState", "Supervisor", "Warmup"]

_log = logging.getLogger("keel.lifecycle")


@dataclass(frozen=True, slots=True)
class Warmup:
    """Optional start-up work: run in the background, bounded by ``timeout`` seconds."""

    name: str
    run: Callable[[], Awaitable[None]]
    timeout: float | None = None


class LifecycleState(Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


Closer = Callable[[], Awaitable[None]]


class Supervisor:
    """Owns the app's background tasks, warm-ups and closers."""

    def __init__(self, settings: LifecycleSettings, *, clock: Clock | None = None) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warmups: list[Warmup] = []
        self._closers: list[tuple[str, Closer]] = []
        self._services: list[tuple[str, Callable[[], Coroutine[Any, Any, Any]]]] = []
        self._warmups_done: asyncio.Event | None = None
        self.state = LifecycleState.CREATED
        self.warmup_results: dict[str, str] = {}

    # Registration (before start).

    def add_warmup(self, warmup: Warmup) -> None:
        if self.state is not LifecycleState.CREATED:
            raise RuntimeError("warm-ups must be registered before start")
        self._warmups.append(warmup)

    def add_service(self, name: str, run: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run ``run()`` as a task from start until shutdown cancels it (a listener, a poller)."""
        if self.state is not LifecycleState.CREATED:
            raise RuntimeError("services must be registered before start")
        self._services.append((name, run))

    def add_closer(self, name: str, closer: Closer) -> None:
        """Run ``closer`` at shutdown, after every task has ended (last added, first run)."""
        self._closers.append((name, closer))

    # Tasks.

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start ``coro`` as a task the supervisor owns until it ends or shutdown cancels it."""
        if self.state in (LifecycleState.STOPPING, LifecycleState.STOPPED):
            coro.close()
            raise RuntimeError("the app is shutting down; no new tasks")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            record_task_failure(task.get_name())
            event(
                _log,
                logging.ERROR,
                "task_failed",
                task=task.get_name(),
                error=type(exc).__name__,
            )

    @property
    def pending_tasks(self) -> int:
        return len(self._tasks)

    # Lifespan.

    async def start(self) -> None:
        """Start warm-ups in the background and return at once."""
        if self.state is not LifecycleState.CREATED:
            raise RuntimeError(f"cannot start from {self.state.value}")
        self.state = LifecycleState.STARTING
        self._warmups_done = asyncio.Event()
        self.spawn("keel.warmups", self._run_warmups(list(self._warmups)))
        for name, run in self._services:
            self.spawn(name, run())
        self.state = LifecycleState.RUNNING
        event(_log, logging.INFO, "lifespan_startup_complete", warmups=len(self._warmups))

    async def wait_warmups(self) -> None:
        """Wait until every warm-up has ended (for tests and tools)."""
        if self._warmups_done is not None:
            await self._warmups_done.wait()

    async def _run_warmups(self, warmups: list[Warmup]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                budget = self._settings.warmup_budget
                for warmup in warmups:
                    group.create_task(self._run_one(warmup, budget), name=f"warmup:{warmup.name}")
        finally:
            if self._warmups_done is not None:
                self._warmups_done.set()

    async def _run_one(self, warmup: Warmup, budget: float) -> None:
        timeout = min(warmup.timeout or self._settings.warmup_timeout, budget)
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await warmup.run()
        except TimeoutError:
            outcome = "timeout"
            event(_log, logging.WARNING, "warmup_timeout", warmup=warmup.name, timeout_s=timeout)
        except asyncio.CancelledError:
            self.warmup_results[warmup.name] = "cancelled"
            raise
        except Exception as exc:  # noqa: BLE001 - a warm-up may fail in any way; the app serves on
            outcome = "failed"
            event(
                _log,
                logging.WARNING,
                "warmup_failed",
                warmup=warmup.name,
                error=type(exc).__name__,
            )
        else:
            outcome = "ok"
            event(
                _log,
                logging.INFO,
                "warmup_ok",
                warmup=warmup.name,
                duration_ms=round((self._clock.monotonic() - started) * 1000, 1),
            )
        self.warmup_results[warmup.name] = outcome
        record_warmup(
            warmup.name,
            "error" if outcome == "failed" else outcome,
            self._clock.monotonic() - started,
        )

    async def stop(self) -> None:
        """Cancel every task, await them within the deadline, then run the closers."""
        if self.state in (LifecycleState.STOPPING, LifecycleState.STOPPED):
            return
        self.state = LifecycleState.STOPPING
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._settings.shutdown_timeout)
            if pending:
                event(
                    _log,
                    logging.ERROR,
                    "shutdown_tasks_stuck",
                    tasks=sorted(t.get_name() for t in pending),
                )
        for name, closer in reversed(self._closers):
            try:
                async with asyncio.timeout(self._settings.shutdown_timeout):
                    await closer()
            except Exception as exc:  # noqa: BLE001 - one failing closer must not skip the rest
                event(_log, logging.ERROR, "closer_failed", closer=name, error=type(exc).__name__)
        self.state = LifecycleState.STOPPED
        event(_log, logging.INFO, "lifespan_shutdown_complete", cancelled=len(tasks))
