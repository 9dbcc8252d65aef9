"""Appending to the chain, inside the caller's transaction.

``record`` is part of the caller's unit of work: the event commits with the
business change or rolls back with it, so there is never a change without its
event nor an event without its change. Every append takes the chain lock, the
single ``audit_chain_head`` row (last seq and hash), by updating it: on
PostgreSQL its row lock, on SQLite the database write lock (waiting up to the
busy timeout). The lock is held until the caller's transaction ends, so
appends are serialised, and a rolled-back append gives its seqs back: the
chain stays gapless. ``record_alone`` appends in a short transaction of its
own (``AuditTrail.record_alone`` group-commits concurrent ones).

Call ``record`` as the last step of a unit of work, after the business writes:
the chain lock is then held only for the commit, and no other lock is taken
while it is held (no lock-order deadlocks).

Appends are serialised on that lock, so what happens while it is held bounds
the append rate. Everything that does not depend on the seq or the previous
hash is prepared before the lock is requested, and:

- On SQLite the head is advanced (``UPDATE ... RETURNING``), the rows sealed
  from it and inserted: two statements.
- On PostgreSQL one statement (``_PG_APPEND``) does it all for a *guess* of
  the head: this process's newest append (``_Tail``). It locks the head row,
  advances it and inserts the rows sealed from the guess if the head is
  there; otherwise it leaves the head as it is and returns it, still locked
  by this transaction, and a second statement with that head cannot miss.
  One round trip under the lock when the guess holds, two when it does not
  (the locking path needs two either way). A process sends its requests for
  the lock one at a time, each as soon as the previous one's was granted, so
  the next append's statement waits on the server while the previous one
  commits and chains from it: a process's concurrent appends follow each
  other without a round trip between them.
- ``record_alone`` on PostgreSQL sends that statement outside a transaction,
  so it commits on its own and the head's lock is held only while the server
  inserts and flushes. A miss there has committed nothing but an unchanged
  head, and the append goes through a unit of work instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from sqlalchemy import BigInteger, bindparam, insert, update
from sqlalchemy.engine import Engine

from keel.audit.canonical import canonical_json, canonical_row_text, format_timestamp
from keel.audit.chain import GENESIS, AuditKeyring, ChainLink
from keel.audit.event import AuditEvent
from keel.audit.models import chain_head_table, events_table
from keel.db import Database, UnitOfWork
from keel.errors import ConfigurationError
from keel.metrics import record_audit_append

__all__ = ["CHAIN_FIELDS", "append_alone", "record", "record_alone", "record_many"]

_head = chain_head_table
_events = events_table

# SQLite: the first statement of every append takes the chain lock and reserves seqs.
_ADVANCE: Final = (
    update(_head)
    .where(_head.c.id == 1)
    .values(seq=_head.c.seq + bindparam("reserve", type_=BigInteger()))
    .returning(_head.c.seq, _head.c.hash)
)
_INSERT: Final = insert(_events)
#: A chained row's fields, in the order rows are inserted, exported and archived.
CHAIN_FIELDS: Final = (
    "seq",
    "occurred_at",
    "action",
    "result",
    "actor_type",
    "actor_id",
    "target_type",
    "target_id",
    "source_ip",
    "user_agent",
    "request_id",
    "details",
    "key_id",
    "prev_hash",
    "hash",
)

# PostgreSQL: the whole append in one statement, for a guessed head ($18, $19); $1..$15
# are the rows' columns (``CHAIN_FIELDS`` in order, one array each; a test checks the two
# agree), $16/$17 the last row's seq and hash. The UPDATE matches the head row whatever
# it holds, so it always waits for and takes the row lock; READ COMMITTED then evaluates
# the SET against the newest committed head: advanced when the guess is right, left as
# it is otherwise. The INSERT only runs when it advanced (the ``audit_events_head``
# trigger sets the head's hash once more, to the same value). The answer is the head as
# the UPDATE left it and how many rows went in.
_PG_APPEND: Final = (
    "WITH head AS (UPDATE audit_chain_head SET "
    "seq = CASE WHEN seq = $18 AND hash = $19 THEN $16 ELSE seq END, "
    "hash = CASE WHEN seq = $18 AND hash = $19 THEN $17 ELSE hash END "
    "WHERE id = 1 RETURNING seq, hash), "
    "inserted AS (INSERT INTO audit_events (seq, occurred_at, action, result, actor_type, "
    "actor_id, target_type, target_id, source_ip, user_agent, request_id, details, key_id, "
    "prev_hash, hash) SELECT r.* FROM head, unnest($1::bigint[], $2::timestamptz[], "
    "$3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], "
    "$10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[]) AS r "
    "WHERE head.seq = $16 AND head.hash = $17 RETURNING 1) "
    "SELECT head.seq, head.hash, (SELECT count(*) FROM inserted) FROM head"
)

# Set on a unit of work's session once it holds the chain lock: its further appends
# never queue behind this process's other requests for that lock (they may be waiting
# for this very transaction).
_HOLDS_CHAIN_LOCK: Final = "keel.audit.holds_chain_lock"

# An event's stored values but seq, key id and hashes, and its timestamp text.
_Prepared = tuple[tuple[Any, ...], str]


def _prepare(event: AuditEvent) -> _Prepared:
    """What can be computed before the chain lock: every value that is not chained."""
    values = (
        event.occurred_at,
        str(event.action),
        event.result.value,
        event.actor_type.value,
        event.actor_id,
        event.target_type,
        event.target_id,
        event.source_ip,
        event.user_agent,
        event.request_id,
        canonical_json(event.details).decode("utf-8"),
    )
    return values, format_timestamp(event.occurred_at)


def _seal_rows(
    prepared: Sequence[_Prepared], first_seq: int, prev_hash: str, keyring: AuditKeyring
) -> list[tuple[Any, ...]]:
    """The rows to insert, in ``CHAIN_FIELDS`` order, chained from ``prev_hash``."""
    key_id = keyring.current_id
    rows = []
    for seq, (values, timestamp) in enumerate(prepared, start=first_seq):
        (_, action, result, actor_type, actor_id, target_type, target_id) = values[:7]
        source_ip, user_agent, request_id, details_json = values[7:]
        canonical = canonical_row_text(
            seq,
            key_id,
            prev_hash,
            timestamp,
            action,
            result,
            actor_type,
            actor_id,
            target_type,
            target_id,
            source_ip,
            user_agent,
            request_id,
            details_json,
        )
        digest = keyring.seal(canonical)
        rows.append((seq, *values, key_id, prev_hash, digest))
        prev_hash = digest
    return rows


async def record(uow: UnitOfWork, event: AuditEvent, keyring: AuditKeyring) -> ChainLink:
    """Append ``event`` to the chain inside ``uow``'s transaction; returns its seq and hash."""
    return (await record_many(uow, (event,), keyring))[0]


async def record_many(
    uow: UnitOfWork, events: Sequence[AuditEvent], keyring: AuditKeyring
) -> list[ChainLink]:
    """Append ``events``, in order, inside ``uow``'s transaction (one lock, one insert)."""
    if not events:
        return []
    return await _record_prepared(uow, [_prepare(event) for event in events], keyring)


async def record_alone(database: Database, event: AuditEvent, keyring: AuditKeyring) -> ChainLink:
    """Append ``event`` in a short transaction of its own (e.g. a failed login).

    Returns once the event is committed; raises if it could not be (never
    fire-and-forget).
    """
    return (await append_alone(database, (event,), keyring))[0]


async def append_alone(
    database: Database, events: Sequence[AuditEvent], keyring: AuditKeyring
) -> list[ChainLink]:
    """Append ``events`` in one short transaction of their own; returns once committed.

    ``DatabaseUnavailable`` when the database cannot be reached.
    """
    if not events:
        return []
    prepared = [_prepare(event) for event in events]
    if database.dialect == "postgresql":
        tail = _tail(database.engine.sync_engine)
        if tail.should_try_alone():
            async with database.autocommit() as driver:
                asked = time.monotonic()
                async with tail.lock():
                    links = await _send(tail, _Plan(tail, prepared, keyring), _on_driver(driver))
            if links is not None:
                tail.hit()
                record_audit_append(len(links), time.monotonic() - asked)
                return links
            tail.missed()
    async with database.unit_of_work() as uow:
        return await _record_prepared(uow, prepared, keyring)


async def _record_prepared(
    uow: UnitOfWork, prepared: Sequence[_Prepared], keyring: AuditKeyring
) -> list[ChainLink]:
    session = uow.session
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        return await _append_sqlite(uow, prepared, keyring)
    # The caller's pending changes go out first, before the chain lock is requested.
    await session.flush()
    tail = _tail(conn.sync_engine)
    execute = await _in_unit(uow)
    # A transaction that holds the lock already must not queue behind this process's other
    # requests for it: they may be waiting for this very transaction.
    holds_lock = bool(session.info.get(_HOLDS_CHAIN_LOCK))
    asked = time.monotonic()
    async with contextlib.nullcontext() if holds_lock else tail.lock():
        links = await _send(tail, _Plan(tail, prepared, keyring), execute)
        waited = time.monotonic() - asked
        session.info[_HOLDS_CHAIN_LOCK] = True
        # On a miss this transaction now holds the head, which ``tail`` names.
        retry = None if links is not None else _Plan(tail, prepared, keyring)
    if retry is not None:
        links = await _send(tail, retry, execute)
        if links is None:
            raise RuntimeError("the audit chain head moved while this transaction held it")
    assert links is not None
    record_audit_append(len(links), waited)
    return links


# --------------------------------------------------------------------------- PostgreSQL


class _Tail:
    """Where this process believes the chain ends, and the order its lock requests go in."""

    __slots__ = ("_lock", "_loop", "failures", "link", "skip")

    def __init__(self) -> None:
        self.link: ChainLink | None = None  # the head as this process last saw or made it
        self.failures = 0  # missed autocommit guesses in a row
        self.skip = 0  # ``record_alone`` calls left to go straight to a unit of work
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def lock(self) -> asyncio.Lock:
        """Held from computing a guess until the database grants the head's row lock."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    def should_try_alone(self) -> bool:
        """Whether ``record_alone`` should try its guess outside a transaction first.

        A miss there costs a round trip and commits nothing useful; after misses
        in a row (other processes append too) this process tries less often,
        backing off exponentially up to ``_MAX_SKIP`` calls.
        """
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def missed(self) -> None:
        self.failures += 1
        self.skip = min(2 ** (self.failures - 1), _MAX_SKIP)

    def hit(self) -> None:
        self.failures = 0


_MAX_SKIP: Final = 64

# One tail per engine (per database of this process); only ever a guess, checked by the
# database on every use.
_tails: weakref.WeakKeyDictionary[Engine, _Tail] = weakref.WeakKeyDictionary()


def _tail(engine: Engine) -> _Tail:
    tail = _tails.get(engine)
    if tail is None:
        tail = _tails[engine] = _Tail()
    return tail


# Runs ``_PG_APPEND`` with its arguments; returns its one row (head seq, head hash, inserted).
_Execute = Callable[..., Awaitable[Any]]


class _Plan:
    """An append's rows, sealed from a guessed head, and its ``_PG_APPEND`` arguments."""

    __slots__ = ("args", "links")

    def __init__(self, tail: _Tail, prepared: Sequence[_Prepared], keyring: AuditKeyring) -> None:
        guess = tail.link or GENESIS
        rows = _seal_rows(prepared, guess.seq + 1, guess.hash, keyring)
        self.links = [ChainLink(row[0], row[-1]) for row in rows]
        last = self.links[-1]
        columns = [list(column) for column in zip(*rows, strict=True)]
        self.args = (*columns, last.seq, last.hash, guess.seq, guess.hash)
        # This process's next guess chains after these rows.
        tail.link = last


async def _send(tail: _Tail, plan: _Plan, execute: _Execute) -> list[ChainLink] | None:
    """Run ``plan``: its links, or ``None`` on a miss (``tail`` then names the real head)."""
    answer = await execute(*plan.args)
    if answer is None:
        raise ConfigurationError("the audit chain head row is missing: run `keel db upgrade`")
    head_seq, head_hash, inserted = answer
    if inserted != len(plan.links):
        tail.link = ChainLink(int(head_seq), str(head_hash))
        return None
    return plan.links


def _on_driver(driver: Any) -> _Execute:
    """Run ``_PG_APPEND`` on an asyncpg connection (outside a transaction it commits alone)."""

    async def execute(*args: Any) -> Any:
        return await driver.fetchrow(_PG_APPEND, *args)

    return execute


async def _in_unit(uow: UnitOfWork) -> _Execute:
    """Run ``_PG_APPEND`` inside ``uow``: on its asyncpg connection, begun before the append
    queues for the lock (so the BEGIN round trip is not inside the queue), or through
    SQLAlchemy if that connection cannot be had."""
    driver = await uow.driver()
    if driver is not None:
        return _on_driver(driver)
    conn = await uow.session.connection()

    async def through_sqlalchemy(*args: Any) -> Any:
        return (await conn.exec_driver_sql(_PG_APPEND, args)).one_or_none()

    return through_sqlalchemy


# --------------------------------------------------------------------------- SQLite


async def _append_sqlite(
    uow: UnitOfWork, prepared: Sequence[_Prepared], keyring: AuditKeyring
) -> list[ChainLink]:
    """Take the write lock by advancing the head, then insert the rows sealed from it."""
    session = uow.session
    # Flushes the caller's pending changes first (autoflush), then takes the lock.
    asked = time.monotonic()
    advanced = (await session.execute(_ADVANCE, {"reserve": len(prepared)})).one_or_none()
    waited = time.monotonic() - asked
    if advanced is None:
        raise ConfigurationError("the audit chain head row is missing: run `keel db upgrade`")
    last_seq = int(advanced[0])
    rows = _seal_rows(prepared, last_seq - len(prepared) + 1, str(advanced[1]), keyring)
    mapped = [dict(zip(CHAIN_FIELDS, row, strict=True)) for row in rows]
    await session.execute(_INSERT, mapped if len(mapped) > 1 else mapped[0])
    record_audit_append(len(rows), waited)
    return [ChainLink(row[0], row[-1]) for row in rows]
