"""``keel users create-admin --email EMAIL``: the one way an admin account comes to exist (SEC-09).

keel ships no default account. The first admin is made here, by someone who
can run commands where keel is deployed. The password is asked twice on a
terminal (never echoed, never an argument, which would land in shell
history and ``ps``); otherwise one line is read from stdin, with only its
line ending removed (SEC-05: nothing else is trimmed). The account is active,
verified and has the ``user`` and ``admin`` roles; it is audited as
``user_created`` by the system actor. An address that already has an account
is refused. Prints the new account's id.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from keel._logging import configure_logging
from keel.cli._output import err, out, settings_or_exit
from keel.errors import ConfigurationError, InvalidInput

__all__ = ["register"]


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("users", help="manage accounts")
    sub = parser.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    admin = sub.add_parser(
        "create-admin", help="create an active, verified admin (password from a prompt or stdin)"
    )
    admin.add_argument("--email", required=True, metavar="EMAIL", help="the admin's address")
    admin.set_defaults(handler=_create_admin)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Password (again): ")
        if first != second:
            raise InvalidInput("the passwords do not match", code="password_mismatch")
        password = first
    else:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise InvalidInput("no password given", code="password_missing")
    return password


def _create_admin(args: argparse.Namespace) -> int:
    # Imported here: only this command pays for argon2, SQLAlchemy's models and the audit chain.
    from keel._clock import SystemClock
    from keel.accounts import AccountService, AccountSettings
    from keel.audit import AuditTrail
    from keel.db import Database
    from keel.db.revision import schema_is_current
    from keel.security.hashing import PasswordHasher
    from keel.security.passwords import PasswordPolicy

    settings = settings_or_exit()
    password = _read_password()
    configure_logging(settings.server.log_level, stream=sys.stderr)

    async def create() -> str:
        database = Database(settings.database)
        hasher = PasswordHasher(settings.passwords)
        try:
            packages = settings.database.migration_packages
            if not schema_is_current(await database.current_revisions(), packages):
                raise ConfigurationError(
                    "the database schema is not current: run `keel db upgrade`"
                )
            service = AccountService(
                database=database,
                audit=AuditTrail.from_settings(database, settings.audit),
                hasher=hasher,
                policy=PasswordPolicy(settings.passwords),
                # No mail is sent: the link base is never used here.
                settings=AccountSettings(
                    service_name=settings.service_name,
                    public_url=settings.public_url or "http://localhost",
                    policy=settings.accounts,
                ),
                clock=SystemClock(),
            )
            view = await service.create_admin(args.email, password)
            return view.id
        finally:
            hasher.close()
            await database.dispose()

    if settings.audit.is_development_key:
        err("keel users: warning: using the development audit key (set KEEL_AUDIT_KEY)")
    out(asyncio.run(create()))
    return 0
