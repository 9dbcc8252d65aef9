"""The ``Store`` protocol every cache backend implements, and the rules they share.

Keys are ``str`` and values ``bytes``. A ``ttl`` is a positive, finite number of
seconds; ``None`` means "no expiry". An expired key is gone: ``get`` returns
``None``, ``add`` succeeds again and ``incr`` starts from zero. Every backend
(memory, local file, Redis, fallback) gives the same answers; one contract suite proves it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final, Literal, Protocol, TypeAlias

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_VERSION",
    "VERSION_DIGITS",
    "CacheStatus",
    "Store",
    "incremented",
    "is_newer",
    "split_versioned",
    "validate_ttl",
    "validate_versioned",
    "versioned",
]

CacheStatus: TypeAlias = Literal["ok", "degraded"]

# Redis counters are signed 64-bit; the memory store enforces the same range so a
# counter that overflows fails the same way everywhere.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

#: A versioned value starts with its version as this many ASCII digits, zero-padded, so
#: comparing the prefixes as bytes compares the versions (the same in Lua, SQL and Python).
VERSION_DIGITS: Final = 20
MAX_VERSION: Final = 10**VERSION_DIGITS - 1

# What Redis accepts as an integer: optional minus, no leading zeros, no spaces, no "+".
# At most 19 digits: anything longer cannot be a signed 64-bit integer anyway.
_INTEGER = re.compile(rb"0|-?[1-9][0-9]{0,18}")


class Store(Protocol):
    """An async key/value cache shared by every request that reaches it.

    Everything that must be shared between workers and instances (rate limits,
    revocations) goes through a ``Store``; only the memory store is per-process.
    """

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent or expired."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in order (``None`` for each absent or expired one).

        One round trip to a shared backend (Redis ``MGET``; on a Redis Cluster
        one ``MGET`` per hash slot, sent at once): several lookups a request
        needs cost the latency of one. Not a snapshot across keys on every
        backend; each value is what ``get`` would have returned.
        """
        ...

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value and any previous expiry."""
        ...

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent; ``True`` when this call stored it.

        Atomic: of any number of concurrent ``add`` calls for one key, exactly one wins.
        """
        ...

    async def set_if_newer(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store versioned ``value`` unless ``key`` holds one at least as new; ``True`` if stored.

        ``value`` comes from :func:`versioned`. Atomic: of concurrent writers the
        highest version ends up stored whatever the order they arrive in, so a
        slow writer holding an old version can never replace a newer one. A
        stored value that is not versioned counts as older than any version.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        ...

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the integer under ``key`` (0 when absent) and return the result.

        Atomic. ``ttl`` applies only when this call creates the key, so the key
        expires ``ttl`` seconds after the first increment: a fixed window. Raises
        ``ValueError`` when the stored value is not a 64-bit decimal integer or the
        result would overflow.
        """
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when absent or without expiry."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise ``CacheUnavailable`` when it does not."""
        ...

    async def close(self) -> None:
        """Release connections and memory. Safe to call more than once."""
        ...

    @property
    def status(self) -> CacheStatus:
        """``"ok"``, or ``"degraded"`` while the shared backend is unreachable (for /readyz)."""
        ...


def validate_ttl(ttl: float | None) -> None:
    """Raise ``ValueError`` unless ``ttl`` is ``None`` or a positive finite number of seconds."""
    # Redis rejects 0 and negative expiries; refusing them everywhere keeps backends alike.
    if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
        raise ValueError("ttl must be a positive, finite number of seconds")


def versioned(version: int, payload: bytes) -> bytes:
    """``payload`` prefixed with ``version`` for :meth:`Store.set_if_newer`."""
    if not 0 <= version <= MAX_VERSION:
        raise ValueError(f"a version is an integer from 0 to {MAX_VERSION}")
    return b"%020d" % version + payload


def validate_versioned(value: bytes) -> None:
    """Raise ``ValueError`` unless ``value`` starts with a :data:`VERSION_DIGITS`-digit version."""
    if len(value) < VERSION_DIGITS or not value[:VERSION_DIGITS].isdigit():
        raise ValueError("a versioned value starts with its 20-digit version")


def split_versioned(value: bytes) -> tuple[int, bytes]:
    """The version and the payload of a value made by :func:`versioned`; ``ValueError`` if not."""
    validate_versioned(value)
    return int(value[:VERSION_DIGITS]), value[VERSION_DIGITS:]


def is_newer(value: bytes, stored: bytes | None) -> bool:
    """Whether ``value`` (versioned) may replace ``stored`` under :meth:`Store.set_if_newer`."""
    if stored is None:
        return True
    prefix = stored[:VERSION_DIGITS]
    if len(prefix) < VERSION_DIGITS or not prefix.isdigit():
        return True
    return value[:VERSION_DIGITS] > prefix


def incremented(stored: bytes | None, amount: int) -> int:
    """The counter ``stored`` (``None``: absent, so 0) plus ``amount``, as Redis ``INCRBY`` does.

    Raises ``ValueError`` when ``amount`` or the stored value is not a 64-bit
    decimal integer, or when the result would leave the 64-bit range.
    """
    if not INT64_MIN <= amount <= INT64_MAX:
        raise ValueError("increment is out of the 64-bit range")
    if stored is None:
        return amount
    if _INTEGER.fullmatch(stored) is None:
        raise ValueError("the stored value is not an integer")
    current = int(stored)
    if not INT64_MIN <= current <= INT64_MAX:
        raise ValueError("the stored value is not a 64-bit integer")
    result = current + amount
    if not INT64_MIN <= result <= INT64_MAX:
        raise ValueError("the counter would leave the 64-bit range")
    return result
