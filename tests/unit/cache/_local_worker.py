"""Another process on a ``LocalStore`` file, for the tests that need several of them.

``Worker`` starts one from a test and talks to it; the process itself runs

    python -m tests.unit.cache._local_worker PATH NOW MAX_ENTRIES

``NOW`` is the ISO start time of the process's ``FrozenClock`` and
``MAX_ENTRIES`` its store's bound. Once the file is open it prints ``ready``;
then it answers one JSON command per line of stdin with one JSON line, until
stdin closes:

* ``["get", key]``: ``[value, ttl]`` (value as text, or ``null``);
* ``["set", key, value]``: ``null`` (no expiry);
* ``["incr", key, count]``: every result of ``count`` increments (ttl 60);
* ``["add", prefix, count, value]``: ``add`` (ttl 60) ``prefix0``... one after
  the other; for each, ``true`` when this process stored it;
* ``["fill", prefix, count]``: ``[stored, refused]`` after setting ``prefix0``...
  (ttl 3600) one after the other; refused means ``CacheFull``;
* ``["advance", seconds]``: ``null``, after moving the clock.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from keel._clock import FrozenClock
from keel.cache import LocalStore
from keel.errors import CacheFull

__all__ = ["Worker", "all_at_once", "ask"]

REPO = Path(__file__).resolve().parents[3]


async def _answer(store: LocalStore, clock: FrozenClock, command: list[object]) -> object:
    name, *args = command
    if name == "get":
        key = str(args[0])
        value = await store.get(key)
        return [None if value is None else value.decode(), await store.ttl(key)]
    if name == "set":
        await store.set(str(args[0]), str(args[1]).encode())
        return None
    if name == "incr":
        return [await store.incr(str(args[0]), ttl=60) for _ in range(int(str(args[1])))]
    if name == "add":
        value = str(args[2]).encode()
        return [await store.add(f"{args[0]}{i}", value, ttl=60) for i in range(int(str(args[1])))]
    if name == "fill":
        stored = refused = 0
        for i in range(int(str(args[1]))):
            try:
                await store.set(f"{args[0]}{i}", b"other", ttl=3600)
                stored += 1
            except CacheFull:
                refused += 1
        return [stored, refused]
    if name == "advance":
        clock.advance(float(str(args[0])))
        return None
    raise ValueError(f"unknown command {name!r}")


async def main(path: str, now: str, max_entries: str) -> None:
    clock = FrozenClock(datetime.fromisoformat(now))
    store = LocalStore(path, clock, max_entries=int(max_entries))
    try:
        await store.ping()
        print("ready", flush=True)
        for line in sys.stdin:
            print(json.dumps(await _answer(store, clock, json.loads(line))), flush=True)
    finally:
        await store.close()


# ------------------------------------------------------------------ the test's side


class Worker:
    """Starts this module as another process with its own LocalStore on ``path``."""

    def __init__(self, path: Path, now: datetime, max_entries: int) -> None:
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.unit.cache._local_worker",
                str(path),
                now.isoformat(),
                str(max_entries),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._stdin, self._stdout = self._process.stdin, self._process.stdout

    def wait_ready(self) -> None:
        assert self._stdout.readline().strip() == "ready"

    def send(self, *command: object) -> None:
        self._stdin.write(json.dumps(command) + "\n")
        self._stdin.flush()

    def receive(self) -> object:
        line = self._stdout.readline()
        assert line, "the worker process died"
        return json.loads(line)

    def ask(self, *command: object) -> object:
        self.send(*command)
        return self.receive()

    def stop(self) -> None:
        if not self._stdin.closed:
            self._stdin.close()
        try:
            self._process.wait(timeout=30)
        finally:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            self._stdout.close()


async def ask(worker: Worker, *command: object) -> object:
    """``worker.ask`` off the event loop."""
    return await asyncio.to_thread(worker.ask, *command)


async def all_at_once(workers: list[Worker], *command: object) -> list[object]:
    """Send ``command`` to every worker before reading any answer: they run together."""

    def run() -> list[object]:
        for worker in workers:
            worker.send(*command)
        return [worker.receive() for worker in workers]

    return await asyncio.to_thread(run)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
