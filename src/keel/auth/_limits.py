"""What the brute-force limits and the rate limits share: keys, windows and sources.

Keys never hold an address or an IP: ``throttle:<kind>:<sha-256 hex>`` (plus
the window index). A sliding window is two fixed windows, indexed by
wall-clock seconds so every worker and instance agrees on them: the previous
window's count weighted by the part of it still inside the sliding window,
plus the current one's.

A source is what limits count per client: an IPv4 address as it is, an IPv6
address by its network of ``ipv6_prefix_length`` bits (/64 by default: one
subscriber's allocation is one client, not 2**64 of them), and an
IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) as its IPv4 address.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final, TypeVar, cast

__all__ = [
    "KNOWN",
    "NO_IP",
    "PREFIX",
    "Window",
    "count",
    "key",
    "source_of",
    "together",
    "unwrap",
    "window_key",
]

_T = TypeVar("_T")

PREFIX: Final = "throttle:"
#: What a client without a usable address is counted under (all such clients together).
NO_IP: Final = "-"
KNOWN: Final = b"1"
_EPSILON: Final = 1e-6


def _digest(kind: str, *parts: str) -> str:
    # NUL-separated and domain-separated, so ("a", "b\0c") and ("a\0b", "c") differ.
    data = "\0".join((kind, *parts)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def key(kind: str, *parts: str) -> str:
    """``throttle:<kind>:<sha-256 of kind and parts>``."""
    return f"{PREFIX}{kind}:{_digest(kind, *parts)}"


def window_key(bucket: str, index: int) -> str:
    return f"{bucket}:{index}"


def source_of(source_ip: str | None, ipv6_prefix_length: int) -> str:
    """The source ``source_ip`` is counted under (see the module docstring)."""
    if source_ip is None:
        return NO_IP
    try:
        ip = ipaddress.ip_address(source_ip)
    except ValueError:
        return source_ip  # not an address (a test client's name): counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        network = ipaddress.IPv6Network((ip, ipv6_prefix_length), strict=False)
        return str(network)
    return str(ip)


async def together(*calls: Awaitable[_T]) -> list[_T]:
    """Run ``calls`` concurrently and return their results; re-raise the first failure.

    Every call finishes before this returns, so no store call is left running.
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast("list[_T]", results)  # no exception left: every item is a _T


def unwrap(result: _T | BaseException) -> _T:
    if isinstance(result, BaseException):
        raise result
    return result


def count(value: bytes | None) -> int:
    return 0 if value is None else int(value)


@dataclass(frozen=True, slots=True)
class Window:
    """Where ``now`` falls in fixed windows of ``length`` seconds."""

    index: int
    elapsed: float
    length: int

    @classmethod
    def at(cls, now: float, length: int) -> Window:
        index = int(now // length)
        return cls(index, now - index * length, length)

    def wait_for_room(self, previous: int, current: int, limit: int) -> float:
        """Seconds until one more event fits under ``limit``; 0 when it fits now.

        The sliding count is ``previous * (1 - elapsed / length) + current``; one
        more fits while that count plus one is at most ``limit``.
        """
        room = limit - 1 - current
        if room >= 0:
            if previous <= room:
                return 0.0
            # previous * (1 - f) <= room  <=>  f >= (previous - room) / previous
            wait = self.length * (previous - room) / previous - self.elapsed
        else:
            # Not before the next window, where this window's count is the weighted one.
            until_next = self.length - self.elapsed
            wait = until_next + self.length * (current - (limit - 1)) / current
        # Float rounding must not turn "exactly now" into a refusal.
        return wait if wait > _EPSILON else 0.0
