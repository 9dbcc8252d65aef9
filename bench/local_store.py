"""LocalStore beside MemoryStore: latency per operation, alone and with another process writing.

Measures ``get_many`` (3 keys), ``set`` and ``incr`` (with a ttl, over 1,000
keys) for ``MemoryStore`` (the reference: no I/O at all) and for three
placements of LocalStore's SQLite calls on the same file:

* ``loop``:   every call on the event loop, writes included (option a);
* ``split``:  reads on the loop, writes on one thread per process (option b,
              what ``LocalStore`` does);
* ``thread``: every call on that thread (option c).

``loop`` and ``thread`` are LocalStore with its private ``_write`` or ``_read``
hook overridden, so all three run the same SQL on the same file format.

First with nothing else touching the file, then with a second process
hammering writes (``incr`` and ``set``) on the same file. For the ``loop``
placement a call's latency is also how long it blocks the event loop (see p99,
max and the share of calls over 1 ms); for ``split`` only its reads block the
loop, for ``thread`` nothing does. On a shared, noisy machine only the ratios
mean anything, and the memory rows show the scheduler's own noise.

    python bench/local_store.py [--ops 3000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import TypeVar

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from keel._clock import SystemClock
from keel.cache import LocalStore, MemoryStore, Store
from keel.cache import local as local_module

_T = TypeVar("_T")
OPERATIONS = ("get_many", "set", "incr")


class AllOnLoop(LocalStore):
    """Option (a): writes too run on the event loop, and so does any wait for the lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, SystemClock())
        self._loop_writer = local_module._Writer(self._file)

    async def _write(self, op: local_module._Op[_T]) -> _T:
        deadline = time.monotonic() + self._timeout
        return self._loop_writer.run(op, self._now(), deadline, True)

    async def close(self) -> None:
        self._loop_writer.close()
        self._loop_writer.executor.shutdown(wait=False)
        await super().close()


class AllOnThread(LocalStore):
    """Option (c): reads too go through the thread."""

    async def _read(self, op: local_module._Op[_T]) -> _T:
        return await self._on_thread(op, self._now(), write=False)


async def _time(call: Callable[[int], Awaitable[object]], calls: range, into: list[float]) -> None:
    for i in calls:
        start = time.perf_counter()
        await call(i)
        into.append(time.perf_counter() - start)


KEYS = ["subject:1", "subject:2", "subject:3"]
VALUE = b"v" * 64


async def _turn(store: Store, calls: range, into: dict[str, list[float]]) -> None:
    await _time(lambda _i: store.get_many(KEYS), calls, into["get_many"])
    await _time(lambda i: store.set(f"set:{i % 1000}", VALUE, ttl=60), calls, into["set"])
    await _time(lambda i: store.incr(f"n:{i % 1000}", ttl=60), calls, into["incr"])


async def measure(
    stores: dict[str, Store], ops: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    """``ops`` calls of each operation on each store, in ``rounds`` alternating turns."""
    samples: dict[str, dict[str, list[float]]] = {
        name: {operation: [] for operation in OPERATIONS} for name in stores
    }
    for store in stores.values():
        for key in KEYS:
            await store.set(key, b"s" * 200, ttl=600)
        # Warm-up: connections, thread, statement caches, pages.
        for i in range(200):
            await store.get_many(KEYS)
            await store.incr(f"n:{i}", ttl=60)
    per_round = max(1, ops // rounds)
    for turn in range(rounds):
        calls = range(turn * per_round, (turn + 1) * per_round)
        for name, store in stores.items():
            await _turn(store, calls, samples[name])
    for store in stores.values():
        await store.close()
    return samples


def _hammer(path: str, ready: Event, stop: Event, done: multiprocessing.Queue[int]) -> None:
    async def run() -> int:
        store = LocalStore(path, SystemClock())
        writes = 0
        await store.incr("hammer:0")
        ready.set()
        while not stop.is_set():
            await store.incr(f"hammer:{writes % 100}", ttl=60)
            await store.set(f"hammer-set:{writes % 100}", b"h" * 64, ttl=60)
            writes += 2
        await store.close()
        return writes

    done.put(asyncio.run(run()))


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def report(title: str, results: dict[str, dict[str, list[float]]]) -> list[str]:
    reference = results["memory"]
    lines = [
        f"== {title}",
        "median / p99 / max per call in microseconds, share of calls over 1 ms;"
        " ratio = median / memory's",
    ]
    rows = [["operation", "store", "median", "p99", "max", ">1ms", "ratio"]]
    for operation in OPERATIONS:
        ref = statistics.median(reference[operation])
        for name, by_op in results.items():
            samples = sorted(by_op[operation])
            med = statistics.median(samples)
            p99 = samples[int(len(samples) * 0.99) - 1]
            rows.append(
                [
                    operation,
                    name,
                    _us(med),
                    _us(p99),
                    _us(samples[-1]),
                    f"{100 * sum(s > 1e-3 for s in samples) / len(samples):.1f}%",
                    h.ratio(med, ref),
                ]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    return lines


async def run_all(path: Path, ops: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    clock = SystemClock()
    stores: dict[str, Store] = {
        "memory": MemoryStore(clock),
        "loop": AllOnLoop(path),
        "split": LocalStore(path, clock),
        "thread": AllOnThread(path, clock),
    }
    return await measure(stores, ops, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=3000, help="calls per operation and store")
    parser.add_argument("--rounds", type=int, default=10, help="alternating turns of the stores")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-local-") as tmp:
        path = Path(tmp) / "cache.sqlite3"
        quiet = asyncio.run(run_all(path, args.ops, args.rounds))
        print("\n".join(report("alone on the file", quiet)))

        context = multiprocessing.get_context("spawn")
        ready, stop = context.Event(), context.Event()
        done: multiprocessing.Queue[int] = context.Queue()
        hammer = context.Process(target=_hammer, args=(str(path), ready, stop, done))
        hammer.start()
        try:
            if not ready.wait(30):
                raise h.BenchError("the writing process did not start")
            started = time.perf_counter()
            busy = asyncio.run(run_all(path, args.ops, args.rounds))
            elapsed = time.perf_counter() - started
        finally:
            stop.set()
            hammer.join(30)
        writes = done.get(timeout=5)
        print()
        print("\n".join(report("with another process writing the same file", busy)))
        print(f"(the other process wrote {writes / elapsed:,.0f} times per second meanwhile)")


if __name__ == "__main__":
    main()
