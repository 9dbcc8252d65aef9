"""The accounts errors; ``keel.api.errors`` maps them by their ``keel.errors`` base class.

::

    Unauthenticated
    └── InvalidCredentials        every login failure, one opaque 401 (SEC-10)
    InvalidInput
    ├── InvalidEmail              (keel.accounts.email)
    ├── InvalidDisplayName
    └── CurrentPasswordRequired   an address change without the current password
    ├── UnknownRole               an admin asked for a role keel does not know
    ClientError
    ├── VerificationFailed        unknown, used or expired e-mail token (400)
    ├── ResetTokenInvalid         unknown, used or expired password-reset token (400)
    └── ReauthenticationFailed    wrong current password on a sensitive change (400)
    NotFound
    └── UserNotFound              an admin named an account that does not exist (404)
    Forbidden
    └── ScopeNotGranted           /auth/token asked for a scope the account lacks
    Conflict
    ├── EmailTaken                create-admin, or a change verified after the address was taken
    └── OwnAdminAccess            an admin tried to disable themselves or drop their own admin role
"""

from __future__ import annotations

from keel.accounts.email import InvalidEmail
from keel.errors import (
    ClientError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)

__all__ = [
    "CurrentPasswordRequired",
    "EmailTaken",
    "InvalidCredentials",
    "InvalidDisplayName",
    "InvalidEmail",
    "OwnAdminAccess",
    "ReauthenticationFailed",
    "ResetTokenInvalid",
    "ScopeNotGranted",
    "UnknownRole",
    "UserNotFound",
    "VerificationFailed",
]


class InvalidCredentials(Unauthenticated):
    """The e-mail address or password is wrong, or the account cannot log in."""

    code = "invalid_credentials"

    def __init__(self) -> None:
        # One message for unknown user, wrong password, disabled and unverified (SEC-10);
        # the reason goes to the audit trail only.
        super().__init__("Authentication required.")


class InvalidDisplayName(InvalidInput):
    """The display name is empty, too long, or holds control characters."""

    code = "display_name_invalid"

    def __init__(self) -> None:
        super().__init__("Use 1 to 100 printable characters for the display name.")


class CurrentPasswordRequired(InvalidInput):
    """A sensitive change was asked for without the current password."""

    code = "current_password_required"

    def __init__(self) -> None:
        super().__init__("Changing the e-mail address needs the current password.")


class VerificationFailed(ClientError):
    """The verification token is unknown, already used or expired."""

    code = "verification_token_invalid"

    def __init__(self) -> None:
        super().__init__("This verification link is invalid or has expired.")


class ReauthenticationFailed(ClientError):
    """The current password given to confirm a sensitive change is wrong."""

    code = "current_password_invalid"

    def __init__(self) -> None:
        super().__init__("The current password is not correct.")


class ScopeNotGranted(Forbidden):
    """A scope was requested that the account does not hold."""

    code = "invalid_scope"

    def __init__(self) -> None:
        super().__init__("The requested scope is not available to this account.")


class EmailTaken(Conflict):
    """Another account already uses this e-mail address."""

    code = "email_taken"

    def __init__(self) -> None:
        super().__init__("Another account already uses this e-mail address.")


class ResetTokenInvalid(ClientError):
    """The password-reset token is unknown, already used, replaced or expired."""

    code = "reset_token_invalid"

    def __init__(self) -> None:
        super().__init__("This password reset link is invalid or has expired.")


class UnknownRole(InvalidInput):
    """A role name that keel does not define."""

    code = "role_unknown"

    def __init__(self) -> None:
        super().__init__("Only known roles can be granted.")


class UserNotFound(NotFound):
    """No account has this id."""

    code = "user_not_found"

    def __init__(self) -> None:
        super().__init__("No such user.")


class OwnAdminAccess(Conflict):
    """An admin may not disable their own account or remove their own admin role."""

    code = "own_admin_access"

    def __init__(self) -> None:
        super().__init__("Admins cannot disable themselves or remove their own admin role.")
