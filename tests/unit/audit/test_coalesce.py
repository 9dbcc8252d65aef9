"""Group commit: batching, results, failures and cancellation in ``Coalescer``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from keel.audit._coalesce import AppendInterrupted, Coalescer


class Writer:
    """A batch writer that records its batches; a batch holding a held item waits for it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.holds: dict[int, asyncio.Event] = {}
        self.fail_on: set[int] = set()

    def hold(self, *items: int) -> asyncio.Event:
        gate = asyncio.Event()
        for item in items:
            self.holds[item] = gate
        return gate

    async def writing(self, batch: list[int]) -> None:
        await _eventually(lambda: batch in self.batches)

    async def __call__(self, items: Sequence[int]) -> list[str]:
        self.batches.append(list(items))
        for item in items:
            if item in self.holds:
                await self.holds[item].wait()
        if self.fail_on & set(items):
            raise LookupError(f"batch {list(items)} failed")
        return [f"r{item}" for item in items]


async def _eventually(condition: Callable[[], bool]) -> None:
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def _until_queued(coalescer: Coalescer[int, str], count: int) -> None:
    await _eventually(lambda: coalescer.queued >= count)


async def _in_flight(
    writer: Writer, coalescer: Coalescer[int, str]
) -> tuple[asyncio.Event, asyncio.Task[str]]:
    """Item 0 submitted and its batch being written, held until the gate opens."""
    gate = writer.hold(0)
    first = asyncio.create_task(coalescer.submit(0))
    await writer.writing([0])
    return gate, first


async def test_a_lone_item_is_written_at_once_alone() -> None:
    writer = Writer()
    coalescer: Coalescer[int, str] = Coalescer(writer)
    assert await coalescer.submit(1) == "r1"
    assert await coalescer.submit(2) == "r2"
    assert writer.batches == [[1], [2]]


async def test_items_arriving_during_a_write_go_out_together_next() -> None:
    writer = Writer()
    coalescer: Coalescer[int, str] = Coalescer(writer)
    gate, first = await _in_flight(writer, coalescer)
    rest = [asyncio.create_task(coalescer.submit(n)) for n in range(1, 6)]
    await _until_queued(coalescer, 5)
    gate.set()
    assert await first == "r0"
    assert await asyncio.gather(*rest) == ["r1", "r2", "r3", "r4", "r5"]
    assert writer.batches == [[0], [1, 2, 3, 4, 5]]
    assert coalescer.queued == 0


async def test_batches_are_bounded() -> None:
    writer = Writer()
    coalescer: Coalescer[int, str] = Coalescer(writer, max_batch=2)
    gate, first = await _in_flight(writer, coalescer)
    rest = [asyncio.create_task(coalescer.submit(n)) for n in range(1, 6)]
    await _until_queued(coalescer, 5)
    gate.set()
    assert [await first, *await asyncio.gather(*rest)] == [f"r{n}" for n in range(6)]
    assert writer.batches == [[0], [1, 2], [3, 4], [5]]


def test_a_batch_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Coalescer(Writer(), max_batch=0)


async def test_a_failed_write_fails_its_whole_batch_and_the_next_batch_still_goes() -> None:
    writer = Writer()
    gate = writer.hold(0)
    writer.fail_on = {2}
    coalescer: Coalescer[int, str] = Coalescer(writer)
    first = asyncio.create_task(coalescer.submit(0))
    await writer.writing([0])
    doomed = [asyncio.create_task(coalescer.submit(n)) for n in (1, 2, 3)]
    await _until_queued(coalescer, 3)
    gate.set()
    assert await first == "r0"
    outcomes = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(outcome, LookupError) for outcome in outcomes)
    assert await coalescer.submit(4) == "r4"
    assert writer.batches == [[0], [1, 2, 3], [4]]


async def test_a_caller_cancelled_while_waiting_still_has_its_item_written() -> None:
    writer = Writer()
    coalescer: Coalescer[int, str] = Coalescer(writer)
    gate, first = await _in_flight(writer, coalescer)
    gone = asyncio.create_task(coalescer.submit(1))
    kept = asyncio.create_task(coalescer.submit(2))
    await _until_queued(coalescer, 2)
    gone.cancel()
    gate.set()
    assert await first == "r0"
    assert await kept == "r2"
    assert gone.cancelled()
    assert writer.batches == [[0], [1, 2]]


async def test_when_only_cancelled_callers_are_left_the_leader_writes_their_items() -> None:
    writer = Writer()
    coalescer: Coalescer[int, str] = Coalescer(writer)
    gate, first = await _in_flight(writer, coalescer)
    gone = asyncio.create_task(coalescer.submit(1))
    await _until_queued(coalescer, 1)
    gone.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await first == "r0"
    assert writer.batches == [[0], [1]]  # nothing submitted is lost
    assert await coalescer.submit(2) == "r2"


async def test_a_leader_cancelled_mid_write_hands_the_lead_over() -> None:
    writer = Writer()
    gate = writer.hold(0)
    coalescer: Coalescer[int, str] = Coalescer(writer)
    leader = asyncio.create_task(coalescer.submit(0))
    await writer.writing([0])
    waiting = [asyncio.create_task(coalescer.submit(n)) for n in (1, 2)]
    await _until_queued(coalescer, 2)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    gate.set()
    assert await asyncio.gather(*waiting) == ["r1", "r2"]
    assert writer.batches == [[0], [1, 2]]


async def test_the_other_callers_of_an_interrupted_batch_are_told() -> None:
    writer = Writer()
    first_gate = writer.hold(0)
    batch_gate = writer.hold(1)
    coalescer: Coalescer[int, str] = Coalescer(writer)
    first = asyncio.create_task(coalescer.submit(0))
    await writer.writing([0])
    followers = [asyncio.create_task(coalescer.submit(n)) for n in (1, 2)]
    await _until_queued(coalescer, 2)
    first_gate.set()
    assert await first == "r0"
    await writer.writing([1, 2])  # 1 leads this batch
    followers[0].cancel()
    with pytest.raises(AppendInterrupted):
        await followers[1]
    assert followers[0].cancelled()
    batch_gate.set()
    assert await coalescer.submit(3) == "r3"  # the lead was handed back


async def test_a_caller_cancelled_as_the_lead_reaches_it_passes_the_lead_on() -> None:
    writer = Writer()
    gate = writer.hold(0)
    promoted: asyncio.Task[str] | None = None

    class Spy(Coalescer[int, str]):
        """Cancels caller 1 right after the lead is handed to it, before it can resume."""

        __slots__ = ("armed",)
        armed: bool

        def _hand_over(self) -> None:
            super()._hand_over()
            if self.armed and promoted is not None:
                self.armed = False
                promoted.cancel()

    coalescer = Spy(writer, max_batch=1)
    coalescer.armed = True
    first = asyncio.create_task(coalescer.submit(0))
    await writer.writing([0])
    promoted = asyncio.create_task(coalescer.submit(1))
    after = asyncio.create_task(coalescer.submit(2))
    await _until_queued(coalescer, 2)
    gate.set()
    assert await first == "r0"
    async with asyncio.timeout(5):
        assert await after == "r2"
    assert promoted.cancelled()
    assert writer.batches == [[0], [1], [2]]
