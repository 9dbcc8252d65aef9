"""SEC-68: 50 writers at once (tasks, threads, processes) still make one chain: no gap, no fork."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keel.audit import Action, record_alone, verify
from keel.db import Database
from tests.audit._support import KEY, KEYRING, event, make_settings, rows

WRITERS = 50
EACH = 3
ROOT = Path(__file__).resolve().parents[2]


async def _write(database: Database, writer: int) -> None:
    for i in range(EACH):
        sample = event(
            writer * 100 + i, action=Action.SESSION_CREATED, details={"w": writer, "i": i}
        )
        await record_alone(database, sample, KEYRING)


async def _assert_one_chain(database: Database) -> None:
    result = await verify(database, KEYRING)
    assert result.ok, str(result)
    assert result.count == WRITERS * EACH
    stored = await rows(database)
    assert [row["seq"] for row in stored] == list(range(1, WRITERS * EACH + 1))
    written = {(json.loads(row["details"])["w"], json.loads(row["details"])["i"]) for row in stored}
    assert written == {(w, i) for w in range(WRITERS) for i in range(EACH)}
    hashes = [row["hash"] for row in stored]
    assert len(set(hashes)) == len(hashes)
    assert [row["prev_hash"] for row in stored[1:]] == hashes[:-1]  # no fork anywhere


async def test_sec_68_fifty_concurrent_tasks(audit_database: Database) -> None:
    await asyncio.gather(*(_write(audit_database, w) for w in range(WRITERS)))
    await _assert_one_chain(audit_database)


async def test_sec_68_fifty_writers_on_ten_threads(
    audit_url: str, audit_database: Database
) -> None:
    threads_count, per_thread = 10, WRITERS // 10
    barrier = threading.Barrier(threads_count, timeout=30)

    def run(thread: int) -> None:
        """One thread: its own event loop and engine, five writers."""

        async def main() -> None:
            own = Database(make_settings(audit_url, pool_size=per_thread, max_overflow=0))
            try:
                await own.ping(10)
                barrier.wait()  # all threads connected: start together
                writers = range(thread * per_thread, (thread + 1) * per_thread)
                await asyncio.gather(*(_write(own, w) for w in writers))
            finally:
                await own.dispose()

        asyncio.run(main())

    with ThreadPoolExecutor(max_workers=threads_count) as pool:
        futures = [pool.submit(run, t) for t in range(threads_count)]
        for future in futures:
            await asyncio.wrap_future(future)  # re-raises a thread's failure here
    await _assert_one_chain(audit_database)


# Imports only keel (no pytest): five of these start at once on a small machine.
WRITER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from pydantic import SecretStr
    from keel.audit import Action, AuditEvent, AuditKeyring, Result, record_alone
    from keel.db import Database
    from keel.settings import DatabaseSettings, normalize_database_url

    url, key, first, count, each = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    keyring = AuditKeyring(current_id="k1", keys={"k1": key.encode()})

    async def write(database, writer):
        for i in range(each):
            sample = AuditEvent(
                Action.SESSION_CREATED, Result.SUCCESS, datetime.now(UTC),
                details={"w": writer, "i": i},
            )
            await record_alone(database, sample, keyring)

    async def main():
        settings = DatabaseSettings(
            url=SecretStr(normalize_database_url(url)), pool_size=count, max_overflow=0,
            pool_timeout=30.0, connect_timeout=30.0, echo=False,
        )
        database = Database(settings)
        try:
            await database.ping(10)  # connected before the start signal
            sys.stdout.write("ready\\n")
            sys.stdout.flush()
            if sys.stdin.readline().strip() != "go":
                raise SystemExit(2)
            await asyncio.gather(*(write(database, w) for w in range(first, first + count)))
        finally:
            await database.dispose()

    asyncio.run(main())
    """
)


@pytest.mark.timeout(90)
async def test_sec_68_fifty_writers_in_five_processes(
    audit_url: str, audit_database: Database
) -> None:
    processes_count, per_process = 5, WRITERS // 5
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER_PROCESS,
            audit_url,
            KEY.decode(),
            str(p * per_process),
            str(per_process),
            str(EACH),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for p in range(processes_count)
    ]
    try:
        for process in processes:  # every writer has imported everything and connected
            assert process.stdout is not None
            assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"
        for process in processes:  # then all start at once
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        outputs = [await asyncio.wait_for(process.communicate(), 60) for process in processes]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.communicate()
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()
    await _assert_one_chain(audit_database)
