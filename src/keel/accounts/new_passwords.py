"""``NewPasswords``: a password someone chooses is checked by the policy, then hashed.

Registration, a password change, a reset and ``keel users create-admin``
all go through :meth:`NewPasswords.hash`, so the policy sees the account's
own words (its address, the address's local part, its display name) every
time.
"""

from __future__ import annotations

from keel.accounts.email import EmailAddress
from keel.security.hashing import PasswordHasher
from keel.security.passwords import PasswordPolicy

__all__ = ["NewPasswords"]


class NewPasswords:
    """The password policy and the hasher, for passwords being set."""

    def __init__(self, policy: PasswordPolicy, hasher: PasswordHasher) -> None:
        self._policy = policy
        self._hasher = hasher

    def check(self, password: str, address: EmailAddress, name: str | None) -> None:
        """Raise ``PasswordRejected`` unless the policy accepts ``password`` for this account."""
        self._policy.check(password, context=_context(address, name))

    async def hash(self, password: str, address: EmailAddress, name: str | None) -> str:
        """Check ``password`` (``PasswordRejected``), then hash it."""
        self.check(password, address, name)
        return await self._hasher.hash(password)


def _context(address: EmailAddress, name: str | None) -> list[str]:
    # The service name comes from the policy's settings; these are the account's words.
    words = [address.address, address.local_part]
    if name:
        words.append(name)
    return words
