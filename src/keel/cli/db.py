"""``keel db upgrade|downgrade|current|prune``: Alembic migrations, and pruning by hand."""

from __future__ import annotations

import argparse
from typing import Any

from keel._logging import configure_logging
from keel.cli._output import err, out, settings_or_exit
from keel.settings import Settings

__all__ = ["register"]


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("db", help="database migrations")
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = sub.add_parser(
        "upgrade", help="migrate to REVISION (default: every head, keel's and KEEL_MIGRATIONS')"
    )
    up.add_argument("revision", nargs="?", default="heads")
    up.set_defaults(handler=_upgrade)
    down = sub.add_parser("downgrade", help="migrate down to REVISION (default: one step)")
    down.add_argument("revision", nargs="?", default="-1")
    down.set_defaults(handler=_downgrade)
    current = sub.add_parser("current", help="print the current revisions and the heads")
    current.set_defaults(handler=_current)
    prune = sub.add_parser(
        "prune", help="delete ended sessions and spent one-time tokens past the retention"
    )
    prune.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds at most (default KEEL_HOUSEKEEPING_BUDGET)",
    )
    prune.set_defaults(handler=_prune)


def _upgrade(args: argparse.Namespace) -> int:
    from keel.db import migrate  # Alembic is heavy: only the commands that migrate load it

    settings = settings_or_exit()
    configure_logging(settings.server.log_level)
    migrate.upgrade(settings.database, args.revision)
    _report(settings)
    return 0


def _downgrade(args: argparse.Namespace) -> int:
    from keel.db import migrate

    settings = settings_or_exit()
    configure_logging(settings.server.log_level)
    migrate.downgrade(settings.database, args.revision)
    _report(settings)
    return 0


def _current(_: argparse.Namespace) -> int:
    from keel.db import migrate
    from keel.db.revision import schema_is_current

    settings = settings_or_exit()
    current = migrate.current_heads(settings.database)
    heads = migrate.heads(settings.database)
    out(f"current: {_names(current) or '(empty)'}")
    out(f"heads:   {_names(heads)}")
    return 0 if schema_is_current(current, settings.database.migration_packages) else 1


def _report(settings: Settings) -> None:
    from keel.db import migrate
    from keel.db.revision import schema_is_current

    current = migrate.current_heads(settings.database)
    state = (
        "every head reached"
        if schema_is_current(current, settings.database.migration_packages)
        else f"heads {_names(migrate.heads(settings.database))}"
    )
    out(f"keel db: at {_names(current) or '(empty)'} ({state})")


def _names(revisions: frozenset[str]) -> str:
    return ",".join(sorted(revisions))


def _prune(args: argparse.Namespace) -> int:
    import asyncio

    from keel._clock import SystemClock
    from keel.api.housekeeping import Housekeeper
    from keel.cache import MemoryStore
    from keel.db import Database

    settings = settings_or_exit()
    configure_logging(settings.server.log_level)
    budget = settings.housekeeping.budget if args.budget is None else args.budget
    if budget <= 0:
        err("keel db prune: --budget must be positive")
        return 2

    async def main() -> int:
        database = Database(settings.database)
        clock = SystemClock()
        try:
            keeper = Housekeeper(
                database,
                MemoryStore(clock),  # the lock is the loop's; by hand, one round runs
                clock,
                retention=settings.housekeeping.ended_retention,
                budget=budget,
                interval=float(settings.housekeeping.interval),
            )
            report = await keeper.run_once()
        finally:
            await database.dispose()
        for table, deleted in report.deleted.items():
            out(f"{table}: {deleted} deleted")
        if not report.complete:
            out("keel db prune: budget spent before the end; run again to carry on")
        return 0

    return asyncio.run(main())
