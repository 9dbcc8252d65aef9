"""The account mails: plain text, one function per kind, links only from ``AccountSettings``."""

from __future__ import annotations

from typing import Final

from keel.accounts.config import AccountSettings
from keel.accounts.mail import Message

__all__ = [
    "VERIFY_EMAIL_PATH",
    "email_change_attempt",
    "email_change_requested",
    "registration_attempt",
    "verify_email",
]

#: The page (on ``KEEL_PUBLIC_URL``) that reads ``#token=`` and POSTs it to /auth/verify-email.
VERIFY_EMAIL_PATH: Final = "/verify-email"


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
