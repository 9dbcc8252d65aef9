"""Refresh-token values: making, hashing and sealing them. No I/O.

A refresh token is one of keel's opaque tokens (:mod:`keel.security.opaque`):
256 random bits, base64url, 43 characters; the database keeps only
``token_hash`` (hex SHA-256); a token that does not have the shape is refused
before any lookup.

Within the grace window a retry with an already rotated token must receive
the *same* successor (SEC-40), yet the database must never hold a usable
token. So the successor is sealed with AES-256-GCM under a key derived from
the predecessor token itself (a SHA-256 with its own domain prefix, which the
stored hash does not reveal); only someone presenting the predecessor can
open it, and the session id is bound in as associated data.
"""

from __future__ import annotations

import binascii
import hashlib
import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keel.security.opaque import (
    OPAQUE_TOKEN_BYTES,
    is_opaque_token,
    new_opaque_token,
    opaque_token_hash,
)

__all__ = [
    "TOKEN_BYTES",
    "is_token_shaped",
    "new_refresh_token",
    "seal_successor",
    "token_hash",
    "unseal_successor",
]

TOKEN_BYTES: Final = OPAQUE_TOKEN_BYTES
_SEAL_DOMAIN: Final = b"keel refresh-token successor seal v1\x00"
_NONCE_BYTES: Final = 12


#: A refresh token is one of keel's opaque tokens (``keel.security.opaque``).
new_refresh_token = new_opaque_token
is_token_shaped = is_opaque_token
token_hash = opaque_token_hash


def _seal_key(token: str) -> bytes:
    return hashlib.sha256(_SEAL_DOMAIN + token.encode("ascii")).digest()


def seal_successor(predecessor: str, successor: str, *, session_id: str) -> bytes:
    """``successor`` encrypted so that only ``predecessor`` opens it (nonce ‖ ciphertext)."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(_seal_key(predecessor)).encrypt(
        nonce, successor.encode("ascii"), session_id.encode("ascii")
    )
    return nonce + sealed


def unseal_successor(predecessor: str, sealed: bytes, *, session_id: str) -> str | None:
    """The successor sealed by :func:`seal_successor`, or ``None`` when it does not open."""
    if len(sealed) <= _NONCE_BYTES:
        return None
    try:
        plain = AESGCM(_seal_key(predecessor)).decrypt(
            sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], session_id.encode("ascii")
        )
        successor = plain.decode("ascii")
    except (InvalidTag, UnicodeDecodeError, binascii.Error):
        return None
    return successor if is_token_shaped(successor) else None
