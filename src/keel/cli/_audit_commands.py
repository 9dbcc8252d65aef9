"""``keel audit verify|checkpoint|export|prune``: the tamper-evident audit trail.

- ``verify [--against SEQ:HASH]`` prints ``OK <count> events, head SEQ:HASH``
  (exit 0) or ``BROKEN at seq N: <reason>`` (exit 1); ``verify --archive FILE``
  checks a prune archive against the prune checkpoint that followed it.
- ``checkpoint`` records a sealed manual checkpoint and prints the head as
  ``SEQ:HASH`` on its last line: keep it outside the database and pass it to
  ``verify --against`` later (that catches deletion of the newest rows).
- ``export --since SEQ`` writes every event with a greater seq as JSON Lines;
  the export is itself audited (``audit_exported``, recorded first, so the
  export carries its own record).
- ``prune --before SEQ --archive FILE`` archives and deletes older events,
  leaving a checkpoint; it is itself audited (``audit_pruned``).

Settings come from the environment (``DATABASE_URL``, ``KEEL_AUDIT_KEY``...).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError

from keel._clock import SystemClock
from keel._logging import configure_logging
from keel.audit import (
    Action,
    ActorType,
    AuditChainBroken,
    AuditEvent,
    Result,
    export_events,
    keyring_from_settings,
    prune,
    record_alone,
    take_checkpoint,
    verify,
)
from keel.audit.archive import verify_archive
from keel.cli._output import err, out, settings_or_exit
from keel.db import Database
from keel.settings import Settings

__all__ = ["checkpoint", "export", "prune_events", "verify_chain"]


def _run(settings: Settings, work: Callable[[Database], Awaitable[int]]) -> int:
    """Run ``work`` on a database built from ``settings``; failures become one line.

    A broken chain prints its ``BROKEN at seq ...`` line; file and SQL errors
    print one line here; other ``KeelError``s (database unavailable, a request
    that makes no sense) reach ``keel.cli.main``, which prints them the same way.
    """
    configure_logging(settings.server.log_level, stream=sys.stderr)
    if settings.audit.is_development_key:
        err("keel audit: warning: using the development audit key (set KEEL_AUDIT_KEY)")

    async def main() -> int:
        database = Database(settings.database)
        try:
            return await work(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(main())
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, like any Unix filter.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except AuditChainBroken as exc:
        out(str(exc.problem))
        return 1
    except OSError as exc:  # the archive file: exists, no permission, disk full
        err(f"keel: {exc} [os_error]")
        return 1
    except SQLAlchemyError as exc:
        err(
            f"keel: the audit tables could not be used ({type(exc).__name__}); "
            "is the database migrated (keel db upgrade)? [database_error]"
        )
        return 1


def verify_chain(args: argparse.Namespace) -> int:
    settings = settings_or_exit()

    async def work(database: Database) -> int:
        keyring = keyring_from_settings(settings.audit)
        if args.archive is not None:
            archived = await verify_archive(database, keyring, args.archive)
            out(str(archived))
            return 0 if archived.ok else 1
        result = await verify(database, keyring, against=args.against)
        out(str(result))
        return 0 if result.ok else 1

    return _run(settings, work)


def checkpoint(_: argparse.Namespace) -> int:
    settings = settings_or_exit()

    async def work(database: Database) -> int:
        keyring = keyring_from_settings(settings.audit)
        checkpoint = await take_checkpoint(database, keyring, clock=SystemClock())
        out(f"checkpoint {checkpoint.id} recorded; keep this head outside the database:")
        out(str(checkpoint.link))
        return 0

    return _run(settings, work)


def export(args: argparse.Namespace) -> int:
    settings = settings_or_exit()

    async def work(database: Database) -> int:
        exported = AuditEvent(
            action=Action.AUDIT_EXPORTED,
            result=Result.SUCCESS,
            occurred_at=SystemClock().now(),
            actor_type=ActorType.SYSTEM,
            actor_id=_operator(),
            target_type="audit_events",
            details={"since_seq": args.since},
        )
        await record_alone(database, exported, keyring_from_settings(settings.audit))
        async for record in export_events(database, since_seq=args.since):
            out(record.to_json_line())
        return 0

    return _run(settings, work)


def prune_events(args: argparse.Namespace) -> int:
    settings = settings_or_exit()

    async def work(database: Database) -> int:
        keyring = keyring_from_settings(settings.audit)
        result = await prune(
            database,
            keyring,
            before_seq=args.before,
            archive_path=args.archive,
            clock=SystemClock(),
            actor_id=_operator(),
        )
        last = result.checkpoint.link.seq
        out(f"pruned {result.count} events (seq {result.first_seq}..{last}) to {result.archive}")
        out(f"audit_pruned recorded at seq {result.event.seq}; chain now starts after:")
        out(str(result.checkpoint.link))
        return 0

    return _run(settings, work)


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "cli"
