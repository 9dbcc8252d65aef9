"""Chaining: the HMAC of each row over its canonical form and its predecessor's hash.

The audit key lives outside the database (settings); each row names the key
id it was sealed with, so keys can rotate while old rows still verify.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["GENESIS_HASH", "AuditKeyring", "seal"]

# The ``prev_hash`` of the first row ever written.
GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditKeyring:
    """The current sealing key and every key old rows may name."""

    current_id: str
    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if self.current_id not in self.keys:
            raise ValueError("the current audit key id must be in the keyring")
        for key_id, key in self.keys.items():
            if len(key) < 32:
                raise ValueError(f"audit key {key_id!r} is shorter than 32 bytes")

    @property
    def current_key(self) -> bytes:
        return self.keys[self.current_id]


def seal(key: bytes, canonical: bytes) -> str:
    """HMAC-SHA256 of ``canonical`` under ``key``, lower-case hex."""
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()
