"""``AccountDeps``: what the account areas share, built once by ``AccountService``.

Every area (:mod:`~keel.accounts.registration`, :mod:`~keel.accounts.login`,
:mod:`~keel.accounts.profile`, :mod:`~keel.accounts.recovery`,
:mod:`~keel.accounts.admin`) works in the database's units of work, reads the
clock and the account settings and audits through the event builder. Every
area that changes an account also checks new passwords and tells what a
committed change means (:mod:`~keel.accounts.propagation`). Anything else an
area uses (the outbox's staging, the login guard's bookkeeping, the token
issuer, the session hooks) is a keyword of its own constructor, so each
area's signature still says what it needs beyond these.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel._clock import Clock
from keel.accounts.config import AccountSettings
from keel.accounts.events import AccountEvents
from keel.accounts.new_passwords import NewPasswords
from keel.accounts.propagation import ChangePropagation
from keel.db import Database

__all__ = ["AccountDeps"]


@dataclass(frozen=True, slots=True)
class AccountDeps:
    """The dependencies the account areas share (one instance per ``AccountService``)."""

    database: Database
    events: AccountEvents
    settings: AccountSettings
    clock: Clock
    #: New-password checks and hashing (every area that sets a password).
    passwords: NewPasswords
    #: What a committed change tells sessions, the login guard and the listeners.
    propagation: ChangePropagation
