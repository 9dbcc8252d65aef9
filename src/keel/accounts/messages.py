"""The account mails: plain text, one function per kind, links only from ``AccountSettings``."""

from __future__ import annotations

from typing import Final

from keel.accounts.config import AccountSettings
from keel.accounts.mail import Message

__all__ = [
    "RESET_PASSWORD_PATH",
    "VERIFY_EMAIL_PATH",
    "email_change_attempt",
    "email_change_requested",
    "password_changed",
    "password_reset",
    "registration_attempt",
    "verify_email",
]

#: The page (on ``KEEL_PUBLIC_URL``) that reads ``#token=`` and POSTs it to /auth/verify-email.
VERIFY_EMAIL_PATH: Final = "/verify-email"
#: The page (on ``KEEL_PUBLIC_URL``) that reads ``#token=`` and POSTs it to /auth/password/reset.
RESET_PASSWORD_PATH: Final = "/reset-password"  # noqa: S105 - a page path, not a secret


def verify_email(
    settings: AccountSettings, *, to: str, token: str, user_id: str, change: bool
) -> Message:
    service = settings.service_name
    hours = settings.verification_ttl // 3600
    purpose = (
        f"To make this the e-mail address of your {service} account"
        if change
        else f"To confirm the e-mail address of your new {service} account"
    )
    return Message(
        to=to,
        subject=f"Confirm your e-mail address for {service}",
        body=(
            f"Hello,\n\n{purpose}, open this link within {hours} hours:\n\n"
            f"{settings.link(VERIFY_EMAIL_PATH, token)}\n\n"
            "The link works once. If you did not ask for this, ignore this message.\n"
        ),
        kind="verify_email",
        user_id=user_id,
    )


def registration_attempt(settings: AccountSettings, *, to: str, user_id: str) -> Message:
    """To the owner of an address someone tried to register again (SEC-12)."""
    service = settings.service_name
    return Message(
        to=to,
        subject=f"Someone tried to register with your address at {service}",
        body=(
            f"Hello,\n\nSomeone, maybe you, tried to create a new {service} account with this "
            "e-mail address, which already has an account. Nothing was changed.\n\n"
            "If it was you, log in instead, or reset your password if you have forgotten it. "
            "If it was not you, you can ignore this message.\n"
        ),
        kind="registration_attempt",
        user_id=user_id,
    )


def email_change_requested(settings: AccountSettings, *, to: str, user_id: str) -> Message:
    """To the current address when a change to another one is requested."""
    service = settings.service_name
    return Message(
        to=to,
        subject=f"Your {service} e-mail address is being changed",
        body=(
            f"Hello,\n\nA change of the e-mail address of your {service} account was requested. "
            "It takes effect once the new address is confirmed; until then this address "
            "stays in use.\n\nIf you did not ask for this, change your password now.\n"
        ),
        kind="email_change_requested",
        user_id=user_id,
    )


def email_change_attempt(settings: AccountSettings, *, to: str, user_id: str) -> Message:
    """To the owner of an address another account tried to move to."""
    service = settings.service_name
    return Message(
        to=to,
        subject=f"Someone tried to use your address at {service}",
        body=(
            f"Hello,\n\nSomeone tried to move another {service} account to this e-mail address, "
            "which already has an account. Nothing was changed. If it was you, you can ignore "
            "this message.\n"
        ),
        kind="email_change_attempt",
        user_id=user_id,
    )


def password_reset(settings: AccountSettings, *, to: str, token: str, user_id: str) -> Message:
    """The reset link; built on ``KEEL_PUBLIC_URL`` only, never a request's Host (SEC-26)."""
    service = settings.service_name
    minutes = settings.policy.password_reset_ttl // 60
    return Message(
        to=to,
        subject=f"Reset your {service} password",
        body=(
            f"Hello,\n\nTo choose a new password for your {service} account, open this link "
            f"within {minutes} minutes:\n\n{settings.link(RESET_PASSWORD_PATH, token)}\n\n"
            "The link works once, and only the newest link you asked for works. If you did not "
            "ask for this, ignore this message: your password stays as it is.\n"
        ),
        kind="password_reset",
        user_id=user_id,
    )


def password_changed(settings: AccountSettings, *, to: str, user_id: str, reset: bool) -> Message:
    """After a change or a reset: tell the owner (no secret, no link with a token)."""
    service = settings.service_name
    how = "reset with a link sent to this address" if reset else "changed"
    return Message(
        to=to,
        subject=f"Your {service} password was changed",
        body=(
            f"Hello,\n\nThe password of your {service} account was just {how}. Other devices "
            "were signed out.\n\nIf this was not you, reset your password now and contact "
            "the operators of this service.\n"
        ),
        kind="password_changed",
        user_id=user_id,
    )
