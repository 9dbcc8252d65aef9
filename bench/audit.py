"""Audit trail: appends/s with 1, 8 and 32 writers, and verified events/s over 100k events.

On PostgreSQL (``KEEL_BENCH_DATABASE_URL``, else ``KEEL_TEST_DATABASE_URL``,
else the local ``test`` database), in a database of its own that it creates,
migrates and drops. Each figure is printed beside its target and beside a
reference measured in the same run on the same database:

- appends: every writer is an asyncio task running one unit of work per event
  (``record`` in its own transaction, committed). The reference is the same
  loop inserting the same row into an unchained copy of the table (same
  indexes, no chain lock): what one process's units of work allow.
- record_alone: every writer calls ``AuditTrail.record_alone`` in a loop (a
  failed login's event): concurrent calls of one process are group-committed.
- both again with the writers spread over ``--processes`` processes (as
  gunicorn workers are), whose guesses of the chain's head go stale whenever
  the other process appended.
- batched appends: the same writers, each unit of work appending
  ``--batch`` events with ``record_many`` (a request that changes several
  things); events/s, not transactions/s.
- the commit ceiling: one-row INSERT transactions (autocommit) through bare
  asyncpg connections, one per writer, on a plain table: what this disk and
  server allow per second with no Python framework at all. With ``pgbench``
  on the PATH its figure for the same one-row insert is printed too.
- verification: ``verify`` over ``--events`` events (best of three). The
  reference reads the same rows the same way without hashing them.

Every append holds the chain lock from its first statement until its commit,
so one event per transaction cannot beat one commit (WAL flush) at a time;
only group commit (``record_alone``, batches) can pass the ceiling.
``--no-flush-variant`` repeats the appends with
``synchronous_commit = off`` on the bench database only (what the chain code
can do when commits are cheap). ``--profile`` adds cProfile's top functions
for one writer and for verification.

    python bench/audit.py [--seconds 4] [--writers 1 8 32] [--batch 10] [--events 100000]
                          [--processes 2] [--profile] [--no-flush-variant]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import itertools
import multiprocessing
import os
import pstats
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from pydantic import SecretStr
from sqlalchemy import text

from keel._clock import SystemClock
from keel.audit import (
    Action,
    ActorType,
    AuditEvent,
    AuditKeyring,
    AuditTrail,
    Result,
    record,
    record_many,
    verify,
)
from keel.audit._reading import CHUNK, iter_ranges, read_head, snapshot_connection
from keel.audit.canonical import canonical_json
from keel.db import Database
from keel.db.migrate import upgrade
from keel.settings import DatabaseSettings, normalize_database_url

APPEND_TARGET = 2_000.0  # events/s
VERIFY_TARGET = 200_000.0  # events/s
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
_PLAIN_SEQ = itertools.count(1)  # seqs of the unchained reference rows, across runs
KEYRING = AuditKeyring(current_id="bench", keys={"bench": b"bench-audit-key-0123456789abcdef"})


@dataclass
class AppendFigure:
    writers: int
    chained: float  # events/s, one event per unit of work (``record``)
    alone: float  # events/s, ``AuditTrail.record_alone`` (group-committed)
    plain: float  # rows/s, the reference
    batched: float = 0.0  # events/s, ``batch`` events per transaction
    ceiling: float = 0.0  # one-row insert commits/s through bare asyncpg
    pgbench: float | None = None  # the same through pgbench, if installed
    split_chained: float | None = None  # ``record``, writers spread over ``processes``
    split_alone: float | None = None  # ``record_alone``, likewise


@dataclass
class AuditBenchResult:
    server: str
    appends: list[AppendFigure] = field(default_factory=list)
    appends_no_flush: list[AppendFigure] = field(default_factory=list)
    batch: int = 10
    processes: int = 2
    verified: float = 0.0  # events/s
    read_only: float = 0.0  # rows/s read without hashing, the reference
    events: int = 0
    profiles: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- setup


def _admin_url() -> str:
    url = (
        os.environ.get("KEEL_BENCH_DATABASE_URL")
        or os.environ.get("KEEL_TEST_DATABASE_URL")
        or DEFAULT_ADMIN_URL
    )
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _settings(url: str, pool: int) -> DatabaseSettings:
    return DatabaseSettings(
        url=SecretStr(normalize_database_url(url)),
        pool_size=pool,
        max_overflow=0,
        pool_timeout=30.0,
        connect_timeout=10.0,
        echo=False,
    )


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A migrated database of the bench's own, dropped afterwards."""
    admin = _admin_url()
    name = f"keelbench_{secrets.token_hex(4)}"
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    parts = urlsplit(admin)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    try:
        upgrade(_settings(url, 1))
        asyncio.run(
            _admin(
                url,
                "CREATE TABLE bench_plain (LIKE audit_events INCLUDING ALL)",
                "CREATE TABLE bench_ceiling (id bigserial PRIMARY KEY, payload text NOT NULL)",
            )
        )
        yield url
    finally:
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        action=Action.AUTHN_LOGIN_SUCCESS,
        result=Result.SUCCESS,
        occurred_at=datetime.now(UTC),
        actor_type=ActorType.USER,
        actor_id=f"user-{n % 1000}",
        target_type="session",
        target_id=f"session-{n}",
        source_ip="203.0.113.9",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) keel-bench",
        request_id=f"req-{n}",
        details={"method": "password", "mfa": False, "attempt": n % 5},
    )


# --------------------------------------------------------------------------- appends


async def _append_rate(
    url: str, writers: int, seconds: float, *, chained: bool, batch: int = 1, alone: bool = False
) -> float:
    """Events (or plain rows) committed per second by ``writers`` concurrent tasks."""
    database = Database(_settings(url, writers))
    trail = AuditTrail(database, KEYRING, SystemClock())
    plain = text(
        "INSERT INTO bench_plain (seq, occurred_at, action, result, actor_type, actor_id, "
        "target_type, target_id, source_ip, user_agent, request_id, details, key_id, "
        "prev_hash, hash) VALUES (:seq, :at, 'authn_login_success', 'success', 'user', :actor, "
        "'session', :target, '203.0.113.9', 'Mozilla/5.0 (X11; Linux x86_64) keel-bench', "
        ":request, :details, 'bench', :prev, :hash)"
    )

    async def one(n: int) -> None:
        if alone:
            await trail.record_alone(_event(n))
            return
        async with database.unit_of_work() as uow:
            if chained and batch > 1:
                await record_many(uow, [_event(n * batch + i) for i in range(batch)], KEYRING)
            elif chained:
                await record(uow, _event(n), KEYRING)
            else:
                sample = _event(n)
                await uow.session.execute(
                    plain,
                    {
                        "seq": next(_PLAIN_SEQ),
                        "at": sample.occurred_at,
                        "actor": sample.actor_id,
                        "target": sample.target_id,
                        "request": sample.request_id,
                        "details": canonical_json(sample.details).decode(),
                        "prev": "0" * 64,
                        "hash": secrets.token_hex(32),
                    },
                )

    done = 0
    stop_at = 0.0

    async def writer(w: int) -> None:
        nonlocal done
        n = w
        while time.perf_counter() < stop_at:
            await one(n)
            done += batch
            n += writers

    try:
        await database.ping(10)
        stop_at = time.perf_counter() + min(1.0, seconds / 4)  # warm up: connections, caches
        await asyncio.gather(*(writer(w) for w in range(writers)))
        done = 0
        began = time.perf_counter()
        stop_at = began + seconds
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return done / (time.perf_counter() - began)
    finally:
        await database.dispose()


async def _window(url: str, writers: int, first: int, alone: bool, start: float, end: float) -> int:
    """Appends this process's ``writers`` complete between ``start`` and ``end`` (wall clock)."""
    database = Database(_settings(url, writers))
    trail = AuditTrail(database, KEYRING, SystemClock())
    done = 0

    async def writer(w: int) -> None:
        nonlocal done
        n = first + w
        while time.time() < end:
            if alone:
                await trail.record_alone(_event(n))
            else:
                async with database.unit_of_work() as uow:
                    await record(uow, _event(n), KEYRING)
            if start <= time.time() <= end:
                done += 1
            n += 1_000_000

    try:
        await database.ping(10)
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return done
    finally:
        await database.dispose()


def _window_process(*args: Any) -> None:
    queue = args[-1]
    queue.put(asyncio.run(_window(*args[:-1])))


def _split_rate(url: str, writers: int, processes: int, seconds: float, *, alone: bool) -> float:
    """Appends/s by ``writers`` tasks spread over ``processes`` processes (gunicorn workers)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    start = time.time() + 4.0  # after every process has imported, connected and warmed up
    end = start + seconds
    shares = [
        writers // processes + (1 if i < writers % processes else 0) for i in range(processes)
    ]
    workers = [
        context.Process(
            target=_window_process, args=(url, share, i * 1000, alone, start, end, queue)
        )
        for i, share in enumerate(shares)
        if share
    ]
    for worker in workers:
        worker.start()
    total: int = sum(queue.get(timeout=seconds + 120) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    return total / seconds


_CEILING_INSERT = "INSERT INTO bench_ceiling (payload) VALUES ($1)"
_PAYLOAD = "203.0.113.9 Mozilla/5.0 (X11; Linux x86_64) keel-bench " + "x" * 300
# The same insert for pgbench (a literal: pgbench's script has no parameters).
_PGBENCH_SCRIPT = (
    "INSERT INTO bench_ceiling (payload) VALUES "
    "('203.0.113.9 Mozilla/5.0 (X11; Linux x86_64) keel-bench ' || repeat('x', 300));\n"
)


async def _ceiling_rate(url: str, writers: int, seconds: float) -> float:
    """One-row INSERT transactions/s through bare asyncpg, one connection per writer."""
    conns = [await asyncpg.connect(url) for _ in range(writers)]
    done = 0
    stop_at = 0.0

    async def writer(conn: asyncpg.Connection) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await conn.execute(_CEILING_INSERT, _PAYLOAD)
            done += 1

    try:
        stop_at = time.perf_counter() + min(1.0, seconds / 4)
        await asyncio.gather(*(writer(c) for c in conns))
        done = 0
        began = time.perf_counter()
        stop_at = began + seconds
        await asyncio.gather(*(writer(c) for c in conns))
        return done / (time.perf_counter() - began)
    finally:
        for conn in conns:
            await conn.close()


def _pgbench_rate(url: str, writers: int, seconds: float) -> float | None:
    """pgbench's tps for the same one-row insert (``-n -f``), or ``None`` without pgbench."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        return None
    parts = urlsplit(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(_PGBENCH_SCRIPT)
        script.flush()
        argv = [pgbench, "-n", "-f", script.name, "-T", str(max(1, round(seconds)))]
        argv += ["-c", str(writers), "-j", str(min(writers, os.cpu_count() or 1))]
        argv += ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)]
        argv += ["-U", parts.username or "postgres", parts.path.lstrip("/")]
        env = {**os.environ, "PGPASSWORD": parts.password or ""}
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False, env=env
        )
    for line in done.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    return None


async def _set_flush_wait(url: str, wait: bool) -> None:
    name = urlsplit(url).path.lstrip("/")
    value = "on" if wait else "off"
    await _admin(url, f'ALTER DATABASE "{name}" SET synchronous_commit = {value}')


async def _check_chain(url: str) -> None:
    database = Database(_settings(url, 1))
    try:
        result = await verify(database, KEYRING)
    finally:
        await database.dispose()
    if not result.ok:
        raise SystemExit(f"bench: the chain does not verify after the appends: {result}")


# --------------------------------------------------------------------------- verification


async def _fill(url: str, events: int) -> int:
    database = Database(_settings(url, 1))
    try:
        async with database.unit_of_work() as uow:
            head = int(
                (await uow.session.execute(text("SELECT seq FROM audit_chain_head"))).scalar_one()
            )
        missing = max(0, events - head)
        batch = 5000
        for first in range(0, missing, batch):
            async with database.unit_of_work() as uow:
                count = min(batch, missing - first)
                await record_many(uow, [_event(first + i) for i in range(count)], KEYRING)
        return head + missing
    finally:
        await database.dispose()


async def _verify_rate(url: str) -> tuple[float, int]:
    database = Database(_settings(url, 1))
    try:
        began = time.perf_counter()
        result = await verify(database, KEYRING)
        elapsed = time.perf_counter() - began
    finally:
        await database.dispose()
    if not result.ok:
        raise SystemExit(f"bench: the chain does not verify: {result}")
    return result.count / elapsed, result.count


async def _read_rate(url: str) -> float:
    """The reference: the same range reads as ``verify``, without hashing."""
    database = Database(_settings(url, 1))
    try:
        async with database.unit_of_work() as uow:
            conn = await snapshot_connection(uow)
            began = time.perf_counter()
            await read_head(conn)  # begins the snapshot, as ``verify`` does
            rows = 0
            async with contextlib.aclosing(iter_ranges(conn, 1, CHUNK)) as ranges:
                async for _, chunk in ranges:
                    rows += len(chunk)
            return rows / (time.perf_counter() - began)
    finally:
        await database.dispose()


def _profiled(work: Callable[[], Awaitable[object]]) -> str:
    profile = cProfile.Profile()

    async def run() -> None:
        profile.enable()
        try:
            await work()
        finally:
            profile.disable()

    asyncio.run(run())
    buffer = io.StringIO()
    pstats.Stats(profile, stream=buffer).sort_stats("tottime").print_stats(12)
    return buffer.getvalue()


# --------------------------------------------------------------------------- run and report


def run(
    *,
    seconds: float,
    writers: Sequence[int],
    batch: int,
    events: int,
    profile: bool,
    no_flush: bool,
    processes: int = 2,
) -> AuditBenchResult:
    with bench_database() as url:
        server = asyncio.run(_server_version(url))
        result = AuditBenchResult(server=server, batch=batch, processes=processes)
        for count in writers:
            chained = asyncio.run(_append_rate(url, count, seconds, chained=True))
            alone = asyncio.run(_append_rate(url, count, seconds, chained=True, alone=True))
            plain = asyncio.run(_append_rate(url, count, seconds, chained=False))
            batched = asyncio.run(_append_rate(url, count, seconds, chained=True, batch=batch))
            ceiling = asyncio.run(_ceiling_rate(url, count, seconds))
            pgbench = _pgbench_rate(url, count, seconds)
            figure = AppendFigure(count, chained, alone, plain, batched, ceiling, pgbench)
            if processes > 1 and count >= processes:
                figure.split_chained = _split_rate(url, count, processes, seconds, alone=False)
                figure.split_alone = _split_rate(url, count, processes, seconds, alone=True)
                print(
                    f"  {count:>2} writer(s) in {processes} processes: "
                    f"{figure.split_chained:,.0f} appends/s, alone {figure.split_alone:,.0f}/s"
                )
            result.appends.append(figure)
            print(
                f"  {count:>2} writer(s): {chained:,.0f} appends/s, alone {alone:,.0f}/s, "
                f"plain {plain:,.0f} rows/s, "
                f"batched {batched:,.0f} events/s, ceiling {ceiling:,.0f} commits/s"
                + ("" if pgbench is None else f" (pgbench {pgbench:,.0f})")
            )
        if no_flush:
            asyncio.run(_set_flush_wait(url, False))
            for count in writers:
                chained = asyncio.run(_append_rate(url, count, seconds, chained=True))
                alone = asyncio.run(_append_rate(url, count, seconds, chained=True, alone=True))
                plain = asyncio.run(_append_rate(url, count, seconds, chained=False))
                result.appends_no_flush.append(AppendFigure(count, chained, alone, plain))
                print(f"  {count:>2} writer(s), no flush wait: {chained:,.0f} appends/s")
            asyncio.run(_set_flush_wait(url, True))
        asyncio.run(_check_chain(url))
        if profile:
            result.profiles["append, 1 writer"] = _profiled(
                lambda: _append_rate(url, 1, seconds, chained=True)
            )

        print(f"  filling to {events:,} events...")
        asyncio.run(_fill(url, events))
        best, reads = 0.0, 0.0
        for _ in range(3):
            rate, result.events = asyncio.run(_verify_rate(url))
            best = max(best, rate)
            reads = max(reads, asyncio.run(_read_rate(url)))
        result.verified, result.read_only = best, reads
        print(f"  verify: {best:,.0f} events/s, read only {reads:,.0f} rows/s")
        if profile:
            result.profiles["verify"] = _profiled(lambda: _verify_rate(url))
    return result


async def _server_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "n/a"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _target_row(label: str, value: float, reference: float) -> list[str]:
    return [
        label,
        f"{value:,.0f}",
        f"{APPEND_TARGET:,.0f}",
        _ratio(value, APPEND_TARGET),
        f"{reference:,.0f}",
        _ratio(value, reference),
    ]


def report(result: AuditBenchResult) -> str:
    headers = ["figure", "keel", "target", "vs target", "reference", "vs reference"]
    rows = []
    for figure in result.appends:
        label = f"record appends/s, {figure.writers} writer(s)"
        rows.append(_target_row(label, figure.chained, figure.plain))
    for figure in result.appends:
        label = f"record_alone appends/s, {figure.writers} w"
        rows.append(_target_row(label, figure.alone, figure.plain))
    for figure in result.appends:
        for name, value in (("record", figure.split_chained), ("alone", figure.split_alone)):
            if value is not None:
                label = f"{name}/s, {figure.writers} w, {result.processes} procs"
                rows.append(_target_row(label, value, figure.plain))
    for figure in result.appends:
        label = f"BATCHED {result.batch}/tx events/s, {figure.writers} w"
        rows.append(_target_row(label, figure.batched, figure.plain))
    rows.append(
        [
            f"verified events/s ({result.events:,})",
            f"{result.verified:,.0f}",
            f"{VERIFY_TARGET:,.0f}",
            _ratio(result.verified, VERIFY_TARGET),
            f"{result.read_only:,.0f}",
            _ratio(result.verified, result.read_only),
        ]
    )
    lines = [
        f"PostgreSQL {result.server}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "reference: appends = unchained insert+commit of the same row, same writers;",
        "           verify = the same range reads without hashing",
        _table(headers, rows),
        "",
        "commit ceiling: one-row INSERT transactions/s (autocommit, no framework):",
        _table(
            ["writers", "bare asyncpg", "pgbench", "appends vs asyncpg", "alone vs asyncpg"],
            [
                [
                    str(figure.writers),
                    f"{figure.ceiling:,.0f}",
                    "n/a" if figure.pgbench is None else f"{figure.pgbench:,.0f}",
                    _ratio(figure.chained, figure.ceiling),
                    _ratio(figure.alone, figure.ceiling),
                ]
                for figure in result.appends
            ],
        ),
    ]
    if result.appends_no_flush:
        rows = [
            _target_row(f"record appends/s, {f.writers} writer(s)", f.chained, f.plain)
            for f in result.appends_no_flush
        ]
        lines += ["", "without waiting for the WAL flush (synchronous_commit = off, bench only):"]
        lines.append(_table(headers, rows))
    for name, text_ in result.profiles.items():
        lines += ["", f"cProfile, {name} (top functions by own time):", text_]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per append measurement")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch", type=int, default=10, help="events per batched transaction")
    parser.add_argument("--events", type=int, default=100_000, help="chain length to verify")
    parser.add_argument("--profile", action="store_true", help="add cProfile summaries")
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="also run record and record_alone with the writers spread over this many "
        "processes, as gunicorn workers are (1: skip)",
    )
    parser.add_argument(
        "--no-flush-variant",
        dest="no_flush",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also measure appends with synchronous_commit = off (default: no)",
    )
    args = parser.parse_args(argv)
    result = run(
        seconds=args.seconds,
        writers=args.writers,
        batch=args.batch,
        events=args.events,
        profile=args.profile,
        no_flush=args.no_flush,
        processes=args.processes,
    )
    print()
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
