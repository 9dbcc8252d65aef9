"""Opaque tokens: the random values keel hands out and stores only as hashes.

Refresh tokens, e-mail verification, password-reset and e-mail-change links
are all the same kind of value: 32 bytes from the operating system's CSPRNG
(256 bits, SEC-37), base64url without padding (43 characters). The database
keeps only the hex SHA-256, so a copy of it grants nothing; a presented value
that does not have the shape is refused before any lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Final

__all__ = ["OPAQUE_TOKEN_BYTES", "is_opaque_token", "new_opaque_token", "opaque_token_hash"]

OPAQUE_TOKEN_BYTES: Final = 32
_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def new_opaque_token() -> str:
    """A fresh token: 256 random bits, base64url without padding, 43 characters."""
    return secrets.token_urlsafe(OPAQUE_TOKEN_BYTES)


def is_opaque_token(token: object) -> bool:
    """Whether ``token`` could be one of keel's opaque tokens at all."""
    return isinstance(token, str) and _SHAPE.fullmatch(token) is not None


def opaque_token_hash(token: str) -> str:
    """The stored form of a token: hex SHA-256 of its ASCII text."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()
