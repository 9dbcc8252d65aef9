"""The durable mail outbox: what it adds to a change's transaction, and how fast senders drain it.

On a SQLite file (the embedded default) and, when reachable, on PostgreSQL
(``KEEL_BENCH_DATABASE_URL``, else ``KEEL_TEST_DATABASE_URL``, else the local
``test`` database) in a database of its own that it creates and drops. Each
figure is printed beside a reference measured in the same run:

- staging: units of work that each insert one small row (the reference)
  against the same units of work that also stage one message (seal + insert),
  interleaved, best of three.
- sending: messages drained per second through a mailer that does nothing,
  by one sender and by two senders on separate pools (claim, send, settle:
  three transactions per batch plus one per message), beside the reference
  rate of one-row commits.

    python bench/mail_outbox.py [--transactions 400] [--messages 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keel.accounts import Message, Outbox
from keel.accounts.sealing import BodySealer
from keel.db import Database, KeelInstance
from keel.db.migrate import upgrade
from keel.settings import MailSettings, Settings

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
BODY = "Hello,\n\nopen https://app.example/verify-email#token=" + "x" * 43 + "\n"


class Nothing:
    async def send(self, message: Message) -> None:
        return None


def _outbox(settings: Settings, database: Database) -> Outbox:
    keys = settings.audit
    return Outbox(
        Nothing(),
        database=database,
        sealer=BodySealer(keys.keys, keys.current_key_id),
        audit=None,
        settings=MailSettings(),
    )


def _message(n: int) -> Message:
    return Message(to=f"user{n}@example.com", subject="Confirm", body=BODY, kind="verify_email")


async def _staging(settings: Settings, transactions: int) -> tuple[float, float]:
    database = Database(settings.database)
    box = _outbox(settings, database)
    try:

        async def run(stage: bool) -> float:
            started = time.perf_counter()
            for n in range(transactions):
                async with database.unit_of_work() as uow:
                    uow.session.add(
                        KeelInstance(
                            id=uuid.uuid4(), created_at=datetime.now(UTC), schema_note="bench"
                        )
                    )
                    if stage:
                        box.stage(uow, [_message(n)])
            return transactions / (time.perf_counter() - started)

        await run(False)  # warm the pool and the statement caches
        plain: list[float] = []
        staged: list[float] = []
        for _ in range(3):  # interleaved, best of three: the machine is shared
            plain.append(await run(False))
            staged.append(await run(True))
        figures = max(plain), max(staged)
        await box.drain()  # the sending figures start from an empty outbox
        return figures
    finally:
        await database.dispose()


async def _sending(settings: Settings, messages: int, senders: int) -> float:
    pools = [Database(settings.database) for _ in range(senders)]
    boxes = [_outbox(settings, pool) for pool in pools]
    try:
        async with pools[0].unit_of_work() as uow:
            boxes[0].stage(uow, [_message(n) for n in range(messages)])
        started = time.perf_counter()
        await asyncio.gather(*(box.drain() for box in boxes))
        elapsed = time.perf_counter() - started
        assert sum(box.sent for box in boxes) == messages
        return messages / elapsed
    finally:
        for pool in pools:
            await pool.dispose()


async def _postgres_database() -> tuple[str, str] | None:
    import asyncpg

    admin = (
        os.environ.get("KEEL_BENCH_DATABASE_URL")
        or os.environ.get("KEEL_TEST_DATABASE_URL")
        or DEFAULT_ADMIN_URL
    )
    name = f"keelbench_{secrets.token_hex(4)}"
    try:
        conn = await asyncpg.connect(admin, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL not reachable ({type(exc).__name__}): SQLite only", file=sys.stderr)
        return None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin)
    return admin, urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


async def _drop(admin: str, url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path[1:]}" WITH (FORCE)')
    finally:
        await conn.close()


def _report(name: str, settings: Settings, transactions: int, messages: int) -> None:
    upgrade(settings.database)
    plain, staged = asyncio.run(_staging(settings, transactions))
    print(
        f"{name}: staging  {staged:8.0f} tx/s with one message, reference {plain:8.0f} tx/s "
        f"(ratio {staged / plain:.2f})"
    )
    for senders in (1, 2):
        rate = asyncio.run(_sending(settings, messages, senders))
        print(
            f"{name}: sending  {rate:8.0f} msg/s with {senders} sender(s), "
            f"reference {plain:8.0f} one-row tx/s (ratio {rate / plain:.2f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=400)
    parser.add_argument("--messages", type=int, default=400)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keel-bench-outbox-") as tmp:
        sqlite = Settings(database_url=f"sqlite:///{tmp}/keel.sqlite3")
        _report("sqlite", sqlite, args.transactions, args.messages)
    found = asyncio.run(_postgres_database())
    if found is not None:
        admin, url = found
        try:
            _report("postgresql", Settings(database_url=url), args.transactions, args.messages)
        finally:
            asyncio.run(_drop(admin, url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
