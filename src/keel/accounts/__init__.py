"""keel.accounts (layer L4): users, their e-mail addresses, passwords and account mail.

``AccountService`` gathers the rules, each area in its own service
(``registration``, ``login``, ``profile``, ``recovery``, ``admin``; the
login in two steps, ``verify_credentials`` then ``complete_login``);
``AccountRepository`` the queries; ``models`` the tables
(revisions ``0003``, ``0004`` and ``0007``); ``outbox`` the durable mail
outbox. Sessions and brute-force limits plug in through the ``SessionHooks``
and ``LoginGuard`` protocols (``hooks``).
``keel.auth`` reads a user's token-relevant state through
:func:`load_user_state` and is told of changes through ``on_user_changed``;
the two packages never import each other (they are wired in ``keel.api``).
"""

from keel.accounts.config import VERIFICATION_TTL, AccountSettings, account_settings_from
from keel.accounts.email import EmailAddress, normalise_email
from keel.accounts.errors import (
    CurrentPasswordRequired,
    EmailTaken,
    InvalidCredentials,
    InvalidDisplayName,
    InvalidEmail,
    OwnAdminAccess,
    ReauthenticationFailed,
    ResetTokenInvalid,
    ScopeNotGranted,
    UnknownRole,
    UserNotFound,
    VerificationFailed,
)
from keel.accounts.hooks import LoginGuard, SessionHooks
from keel.accounts.mail import (
    ConsoleMailer,
    FileMailer,
    Mailer,
    Message,
    SmtpMailer,
    build_mailer,
)
from keel.accounts.models import EmailVerificationToken, OutboxMessage, PasswordResetToken, User
from keel.accounts.names import normalise_display_name
from keel.accounts.outbox import Outbox, OutboxObserver
from keel.accounts.repository import AccountRepository
from keel.accounts.roles import KNOWN_ROLES, ROLE_ADMIN, ROLE_USER, Role, RoleCatalog
from keel.accounts.service import (
    NO_ORIGIN,
    UNSET,
    AccountAreas,
    AccountService,
    CallerOrigin,
    LoginResult,
    Origin,
    UserChanged,
    VerifiedLogin,
)
from keel.accounts.state import UserSnapshot, UserState, load_user_snapshot, load_user_state
from keel.accounts.views import UserView, profile_json

__all__ = [
    "KNOWN_ROLES",
    "NO_ORIGIN",
    "ROLE_ADMIN",
    "ROLE_USER",
    "UNSET",
    "VERIFICATION_TTL",
    "AccountAreas",
    "AccountRepository",
    "AccountService",
    "AccountSettings",
    "CallerOrigin",
    "ConsoleMailer",
    "CurrentPasswordRequired",
    "EmailAddress",
    "EmailTaken",
    "EmailVerificationToken",
    "FileMailer",
    "InvalidCredentials",
    "InvalidDisplayName",
    "InvalidEmail",
    "LoginGuard",
    "LoginResult",
    "Mailer",
    "Message",
    "Origin",
    "Outbox",
    "OutboxMessage",
    "OutboxObserver",
    "OwnAdminAccess",
    "PasswordResetToken",
    "ReauthenticationFailed",
    "ResetTokenInvalid",
    "Role",
    "RoleCatalog",
    "ScopeNotGranted",
    "SessionHooks",
    "SmtpMailer",
    "UnknownRole",
    "User",
    "UserChanged",
    "UserNotFound",
    "UserSnapshot",
    "UserState",
    "UserView",
    "VerificationFailed",
    "VerifiedLogin",
    "account_settings_from",
    "build_mailer",
    "load_user_snapshot",
    "load_user_state",
    "normalise_display_name",
    "normalise_email",
    "profile_json",
]
