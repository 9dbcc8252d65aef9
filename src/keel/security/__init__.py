"""keel.security: hashing, token and header primitives (pure, no web framework)."""

from keel.security.hashing import PasswordHasher
from keel.security.headers import HeaderPolicy
from keel.security.keys import KeySet, SigningKey, key_findings, load_key_set
from keel.security.passwords import Blocklist, PasswordPolicy, PasswordRejected, normalise
from keel.security.tokens import AccessClaims, AccessTokens, InvalidToken, IssuedToken, TokenKind

__all__ = [
    "AccessClaims",
    "AccessTokens",
    "Blocklist",
    "HeaderPolicy",
    "InvalidToken",
    "IssuedToken",
    "KeySet",
    "PasswordHasher",
    "PasswordPolicy",
    "PasswordRejected",
    "SigningKey",
    "TokenKind",
    "key_findings",
    "load_key_set",
    "normalise",
]
