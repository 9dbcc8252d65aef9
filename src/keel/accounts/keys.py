"""The keys an e-mail address is limited and looked up by."""

from __future__ import annotations

from keel.accounts.email import InvalidEmail, normalise_email

__all__ = ["account_keys"]


def account_keys(email: str) -> tuple[str, str | None]:
    """The login guard's key for ``email``, and its e-mail key (``None``: not an address).

    Unknown and known addresses are limited alike; input that is not an
    address is limited by its stripped, lower-cased form.
    """
    try:
        key = normalise_email(email).key
    except InvalidEmail:
        return email.strip().lower(), None
    return key, key
