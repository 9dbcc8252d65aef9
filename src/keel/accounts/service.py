"""``AccountService``: the accounts' operations in one place, each carried out by its area.

The rules live in one small service per area, each given its dependencies
when it is built:

- :class:`~keel.accounts.registration.RegistrationService`: register, verify an address;
- :class:`~keel.accounts.login.LoginService`: ``verify_credentials`` then
  ``complete_login`` (a second factor goes between the two), ``login``,
  ``authenticate``;
- :class:`~keel.accounts.profile.ProfileService`: the signed-in user's own
  account (read, update, change the address or the password, delete);
- :class:`~keel.accounts.recovery.RecoveryService`: forgot and reset password;
- :class:`~keel.accounts.admin.AdminService`: create the first admin, read
  accounts, enable/disable them, set their roles.

They share the audit-event builder (``events``), the login guard's bookkeeping
around password checks (``attempts``), new-password checks (``new_passwords``),
mail staging in the durable outbox (``staging``) and what a committed change
tells sessions, the guard and the listeners (``propagation``).
:class:`AccountService` builds the shared dependencies once, as one
:class:`~keel.accounts.deps.AccountDeps`, gives each area that and what only
it needs beyond them, and forwards each operation to its area; ``keel.api``
hands the areas to the routers that use them.

Every write is audited in the unit of work that makes it; a refusal that
changes nothing is audited in a transaction of its own. Sessions and
brute-force limits come through the protocols in :mod:`keel.accounts.hooks`
(both optional, given at construction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keel._clock import Clock
from keel.accounts.access import LoginResult
from keel.accounts.admin import AdminService
from keel.accounts.attempts import PasswordAttempts
from keel.accounts.config import AccountSettings
from keel.accounts.deps import AccountDeps
from keel.accounts.events import AccountEvents
from keel.accounts.hooks import LoginGuard, SessionHooks
from keel.accounts.login import LoginService, VerifiedLogin
from keel.accounts.mailcap import MailBudget
from keel.accounts.new_passwords import NewPasswords
from keel.accounts.origin import NO_ORIGIN, CallerOrigin, Origin
from keel.accounts.outbox import Outbox
from keel.accounts.pacing import Floors
from keel.accounts.profile import UNSET, ProfileService
from keel.accounts.propagation import ChangePropagation, UserChanged
from keel.accounts.recovery import RecoveryService
from keel.accounts.registration import RegistrationService
from keel.accounts.staging import MailStaging
from keel.audit import AuditTrail
from keel.db import Database
from keel.security.hashing import PasswordHasher
from keel.security.passwords import PasswordPolicy
from keel.security.tokens import AccessTokenIssuer

__all__ = [
    "NO_ORIGIN",
    "UNSET",
    "AccountAreas",
    "AccountService",
    "CallerOrigin",
    "LoginResult",
    "Origin",
    "UserChanged",
    "VerifiedLogin",
]


@dataclass(frozen=True, slots=True)
class AccountAreas:
    """The five area services of one ``AccountService``, sharing its dependencies."""

    registration: RegistrationService
    login: LoginService
    profile: ProfileService
    recovery: RecoveryService
    admin: AdminService


class AccountService:
    """Registration, login, profile, recovery and administration, each by its area service.

    ``sessions`` and ``guard`` (see :mod:`keel.accounts.hooks`), ``mail_budget``
    (:mod:`keel.accounts.mailcap`) and ``on_user_changed`` (one listener or
    several, told after every committed change to a user) are optional.
    """

    def __init__(
        self,
        *,
        database: Database,
        audit: AuditTrail,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        settings: AccountSettings,
        clock: Clock,
        tokens: AccessTokenIssuer | None = None,
        outbox: Outbox | None = None,
        on_user_changed: UserChanged | Sequence[UserChanged] = (),
        sessions: SessionHooks | None = None,
        guard: LoginGuard | None = None,
        mail_budget: MailBudget | None = None,
    ) -> None:
        self._settings = settings
        self._hasher = hasher
        self._outbox = outbox
        listeners = [on_user_changed] if callable(on_user_changed) else list(on_user_changed)
        events = AccountEvents(audit)
        attempts = PasswordAttempts(guard=guard, hasher=hasher, events=events, settings=settings)
        mail = MailStaging(outbox, mail_budget)
        deps = AccountDeps(
            database=database,
            events=events,
            settings=settings,
            clock=clock,
            passwords=NewPasswords(policy, hasher),
            propagation=ChangePropagation(sessions=sessions, guard=guard, listeners=listeners),
        )
        self.areas = AccountAreas(
            registration=RegistrationService(deps, mail=mail),
            login=LoginService(
                deps, hasher=hasher, attempts=attempts, tokens=tokens, sessions=sessions
            ),
            profile=ProfileService(deps, attempts=attempts, mail=mail, tokens=tokens),
            recovery=RecoveryService(deps, mail=mail),
            admin=AdminService(deps),
        )
        areas = self.areas
        # Each operation is its area's own method (same signature, same docstring).
        self.register = areas.registration.register
        self.verify_email = areas.registration.verify_email
        self.authenticate = areas.login.authenticate
        self.login = areas.login.login
        self.verify_credentials = areas.login.verify_credentials
        self.complete_login = areas.login.complete_login
        self.profile = areas.profile.profile
        self.update_profile = areas.profile.update_profile
        self.change_password = areas.profile.change_password
        self.delete_account = areas.profile.delete_account
        self.forgot_password = areas.recovery.forgot_password
        self.reset_password = areas.recovery.reset_password
        self.create_admin = areas.admin.create_admin
        self.admin_view = areas.admin.admin_view
        self.update_user = areas.admin.update_user
        self.set_active = areas.admin.set_active
        self.set_roles = areas.admin.set_roles

    @property
    def settings(self) -> AccountSettings:
        return self._settings

    @property
    def floors(self) -> Floors:
        """The response floors (:mod:`keel.accounts.pacing`), from the account policy."""
        return self._settings.policy

    @property
    def hasher(self) -> PasswordHasher:
        return self._hasher

    @property
    def outbox(self) -> Outbox | None:
        return self._outbox
