"""``keel db upgrade|downgrade|current``: Alembic migrations, run once per deploy."""

from __future__ import annotations

import argparse
from typing import Any

from keel._logging import configure_logging
from keel.cli._output import out, settings_or_exit

__all__ = ["register"]


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("db", help="database migrations")
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = sub.add_parser("upgrade", help="migrate to REVISION (default head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=_upgrade)
    down = sub.add_parser("downgrade", help="migrate down to REVISION (default: one step)")
    down.add_argument("revision", nargs="?", default="-1")
    down.set_defaults(handler=_downgrade)
    current = sub.add_parser("current", help="print the current revision and the head")
    current.set_defaults(handler=_current)


def _upgrade(args: argparse.Namespace) -> int:
    from keel.db import migrate  # Alembic is heavy: only the commands that migrate load it

    settings = settings_or_exit()
    configure_logging(settings.log_level)
    migrate.upgrade(settings.database, args.revision)
    out(f"keel db: at {migrate.current(settings.database)} (head {migrate.head()})")
    return 0


def _downgrade(args: argparse.Namespace) -> int:
    from keel.db import migrate

    settings = settings_or_exit()
    configure_logging(settings.log_level)
    migrate.downgrade(settings.database, args.revision)
    out(f"keel db: at {migrate.current(settings.database)} (head {migrate.head()})")
    return 0


def _current(_: argparse.Namespace) -> int:
    from keel.db import migrate

    settings = settings_or_exit()
    current = migrate.current(settings.database)
    head = migrate.head()
    out(f"current: {current or '(empty)'}")
    out(f"head:    {head}")
    return 0 if current == head else 1
