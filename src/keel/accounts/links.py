"""Verification links: a new address (or a new account's) is proven by a single-use token.

Only the token's SHA-256 is stored; the token itself travels in the mail.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from keel.accounts.email import EmailAddress
from keel.accounts.models import EmailVerificationToken, User
from keel.accounts.repository import AccountRepository
from keel.security.opaque import new_opaque_token, opaque_token_hash

__all__ = ["new_verification_token"]


def new_verification_token(
    repo: AccountRepository, user: User, address: EmailAddress, now: datetime, *, ttl: int
) -> str:
    """Add a link proving ``address`` for ``user`` (valid ``ttl`` seconds); its token."""
    token = new_opaque_token()
    repo.add_token(
        EmailVerificationToken(
            id=uuid.uuid4(),
            user_id=user.id,
            token_hash=opaque_token_hash(token),
            email=address.address,
            email_key=address.key,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            used_at=None,
        )
    )
    return token
