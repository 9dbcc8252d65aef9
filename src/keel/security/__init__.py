"""keel.security: hashing, token and header primitives (pure, no web framework)."""

from keel.security.hashing import PasswordHasher
from keel.security.headers import HeaderPolicy
from keel.security.passwords import Blocklist, PasswordPolicy, PasswordRejected, normalise

__all__ = [
    "Blocklist",
    "HeaderPolicy",
    "PasswordHasher",
    "PasswordPolicy",
    "PasswordRejected",
    "normalise",
]
