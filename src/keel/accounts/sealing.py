"""Sealing outbox bodies: AES-256-GCM under keys derived from the audit keys. No I/O.

A queued message's body may carry a single-use link (verification, reset).
Tokens are stored only as SHA-256 elsewhere (SEC-25), so the outbox must not
be the one table that holds them in clear: the body is sealed under a key
derived from the current audit key (one secret to rotate), bound to the
message id (a sealed body moved to another row does not open), and every
older audit key still opens what it sealed, so a rotation strands nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

__all__ = ["BodySealer"]

_DOMAIN: Final = b"keel mail outbox body seal v1\x00"
_NONCE_BYTES: Final = 12


class BodySealer:
    """Seals with the current key; opens with any key it knows by id."""

    def __init__(self, keys: Mapping[str, SecretStr], current_key_id: str) -> None:
        if current_key_id not in keys:
            raise ValueError("the current key id names no key")
        self._keys = {
            key_id: AESGCM(hashlib.sha256(_DOMAIN + secret.get_secret_value().encode()).digest())
            for key_id, secret in keys.items()
        }
        self._current = current_key_id

    def __repr__(self) -> str:
        return f"BodySealer(current={self._current!r})"

    @property
    def current_key_id(self) -> str:
        return self._current

    def seal(self, body: str, *, message_id: str) -> bytes:
        """``body`` encrypted under the current key (nonce ‖ ciphertext)."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._keys[self._current].encrypt(
            nonce, body.encode("utf-8"), message_id.encode("ascii")
        )
        return nonce + sealed

    def open(self, sealed: bytes, *, key_id: str, message_id: str) -> str | None:
        """The body, or ``None`` when the key is unknown or the seal does not open."""
        key = self._keys.get(key_id)
        if key is None or len(sealed) <= _NONCE_BYTES:
            return None
        try:
            plain = key.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], message_id.encode("ascii")
            )
            return plain.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            return None
