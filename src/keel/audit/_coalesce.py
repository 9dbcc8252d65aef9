"""Group commit: concurrent submissions written in batches, one batch at a time.

``Coalescer(write).submit(item)`` returns ``write``'s result for ``item`` once
the batch holding it has been written. Nothing runs in the background: the
first caller to find no batch in flight *leads*. It writes everything queued
so far (up to ``max_batch``) in one ``write`` call, hands each caller its
result, then passes the lead to the oldest caller still waiting and returns.
Callers that arrive while a batch is in flight queue up and go out together
in the next one, so under load one commit carries many items, and with a
single caller every item is written at once, alone.

Every item a caller submitted is written by some leader, even when that
caller was cancelled while it waited (its outcome is then dropped). A failed
``write`` raises its exception in every caller of that batch, and the next
batch is still written. If the leader itself is cancelled while its batch is
in flight, the other callers of the batch get ``AppendInterrupted``: their
items may or may not have been written.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, TypeVar

from keel.errors import DependencyUnavailable

__all__ = ["AppendInterrupted", "Coalescer"]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BATCH: Final = 256


class AppendInterrupted(DependencyUnavailable):
    """The batch holding this item was cut off mid-write; it may or may not be stored."""

    code = "audit_append_interrupted"


class _Lead:
    """The outcome that tells a waiting caller to lead the next batch."""


_LEAD: Final = _Lead()


def _promoted(future: asyncio.Future[Any]) -> bool:
    if not future.done() or future.cancelled() or future.exception() is not None:
        return False
    return isinstance(future.result(), _Lead)


class _Slot(Generic[T, R]):
    __slots__ = ("future", "item")

    def __init__(self, item: T, future: asyncio.Future[R | _Lead]) -> None:
        self.item = item
        self.future = future


class Coalescer(Generic[T, R]):
    """Writes concurrently submitted items in batches through ``write`` (one batch at a time)."""

    __slots__ = ("_leading", "_max_batch", "_queue", "_write")

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write = write
        self._max_batch = max_batch
        self._queue: deque[_Slot[T, R]] = deque()
        self._leading = False

    @property
    def queued(self) -> int:
        """Items waiting for a batch (not counting the one in flight)."""
        return len(self._queue)

    async def submit(self, item: T) -> R:
        """``write``'s result for ``item``, once it is written; its exception if that failed."""
        loop = asyncio.get_running_loop()
        slot: _Slot[T, R] = _Slot(item, loop.create_future())
        self._queue.append(slot)
        if self._leading:
            try:
                outcome = await slot.future
            except asyncio.CancelledError:
                if _promoted(slot.future):  # cancelled just as the lead came: pass it on
                    self._hand_over()
                raise
            if not isinstance(outcome, _Lead):
                return outcome
            slot.future = loop.create_future()  # promoted: this caller writes the next batch
        else:
            self._leading = True
        try:
            while True:
                await self._write_batch(slot)
                # Done once this caller's item is written and someone can take the lead (or
                # nobody is left); cancelled callers' items are written all the same.
                if slot.future.done() and (not self._queue or self._next_waiter() is not None):
                    break
        finally:
            self._hand_over()
        outcome = slot.future.result()
        assert not isinstance(outcome, _Lead)
        return outcome

    def _next_waiter(self) -> _Slot[T, R] | None:
        return next((slot for slot in self._queue if not slot.future.done()), None)

    def _hand_over(self) -> None:
        waiter = self._next_waiter()
        if waiter is None:
            # Nobody left to lead: cancelled callers' items stay queued for the next submit.
            self._leading = False
        else:
            waiter.future.set_result(_LEAD)

    async def _write_batch(self, own: _Slot[T, R]) -> None:
        count = min(len(self._queue), self._max_batch)
        batch = [self._queue.popleft() for _ in range(count)]
        try:
            results = await self._write([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError("a batch write returned a different number of results")
        except asyncio.CancelledError:
            for slot in batch:
                if slot is own:
                    slot.future.cancel()
                elif not slot.future.done():
                    slot.future.set_exception(
                        AppendInterrupted("the batch holding this item was interrupted")
                    )
            raise
        except Exception as exc:  # noqa: BLE001  (every caller of the batch gets it)
            for slot in batch:
                if not slot.future.done():
                    slot.future.set_exception(exc)
            return
        for slot, result in zip(batch, results, strict=True):
            if not slot.future.done():
                slot.future.set_result(result)
