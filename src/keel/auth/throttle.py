"""Brute-force and rate limits on authentication, shared through the cache store (SEC-13..16).

:class:`LoginThrottle` guards password checks (it fits ``keel.accounts``'
``LoginGuard`` protocol by shape):

- per account, consecutive failures from any source. From the
  ``account_failures``-th on, every failure locks the account for
  ``account_base_delay * 2 ** (failures - threshold)`` seconds (at most
  ``account_max_delay``: a lock is always temporary, SEC-15). The lock applies
  to sources the account has not logged in from within ``known_source_ttl``,
  so a stranger hammering an account cannot lock its owner out of their usual
  place. The count is forgotten ``account_failure_window`` seconds after the
  first failure it holds (the store's fixed-window ``incr``), on a success,
  and on :meth:`LoginThrottle.clear` (a completed password reset);
- per (account, IP), failures in a sliding window of ``window`` seconds; this
  one applies to known sources too.

:class:`RateLimiter` counts every attempt on an authentication endpoint per
client IP and in all, each in a sliding window (SEC-14).

A sliding window is two fixed windows, indexed by wall-clock seconds so every
worker and instance agrees on them: the previous window's count weighted by
the part of it still inside the sliding window, plus the current one's.

Keys never hold an address or an IP: ``throttle:<kind>:<sha-256 hex>`` (plus
the window index). The same key is derived for an account that exists and one
that does not, so the answers are the same for both.

Store calls, each group issued concurrently (one network round trip of
latency per group):

- ``check``: 1 ``get_many`` (lock, both (account, IP) windows, known source);
- ``failed``: 2 increments; plus 1 write from the threshold on (the lock);
- ``succeeded``: 4 deletes and 1 write; ``clear``: 2 deletes;
- ``RateLimiter.hit``: 2 increments and 1 ``get_many``; on a refusal 2 more
  increments (a refused attempt is not counted) and, once per window and
  bucket, 1 ``add`` from :meth:`RateLimiter.first_refusal`.

A store error (``DependencyUnavailable``) propagates: the limits neither allow
nor deny silently when the cache cannot answer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final, TypeVar, cast

from keel._clock import Clock
from keel.cache import Store
from keel.errors import TooManyRequests
from keel.settings import ThrottleSettings

__all__ = ["LoginThrottle", "RateLimiter"]

_T = TypeVar("_T")

_PREFIX: Final = "throttle:"
# Exponents beyond this make the delay astronomically larger than any cap anyway.
_MAX_EXPONENT: Final = 64
# What a client without a usable address is counted under (all such clients together).
_NO_IP: Final = "-"
_KNOWN: Final = b"1"
_EPSILON: Final = 1e-6


def _digest(kind: str, *parts: str) -> str:
    # NUL-separated and domain-separated, so ("a", "b\0c") and ("a\0b", "c") differ.
    data = "\0".join((kind, *parts)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def _key(kind: str, *parts: str) -> str:
    return f"{_PREFIX}{kind}:{_digest(kind, *parts)}"


async def _together(*calls: Awaitable[_T]) -> list[_T]:
    """Run ``calls`` concurrently and return their results; re-raise the first failure.

    Every call finishes before this returns, so no store call is left running.
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast("list[_T]", results)  # no exception left: every item is a _T


def _unwrap(result: _T | BaseException) -> _T:
    if isinstance(result, BaseException):
        raise result
    return result


def _count(value: bytes | None) -> int:
    return 0 if value is None else int(value)


@dataclass(frozen=True, slots=True)
class _Window:
    """Where ``now`` falls in fixed windows of ``length`` seconds."""

    index: int
    elapsed: float
    length: int

    @classmethod
    def at(cls, now: float, length: int) -> _Window:
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


class LoginThrottle:
    """Per-account and per-(account, IP) limits on password checks."""

    def __init__(self, store: Store, settings: ThrottleSettings, *, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock

    def __repr__(self) -> str:
        return f"LoginThrottle(enabled={self._settings.enabled}, store={self._store!r})"

    async def check(self, account_key: str, source_ip: str | None) -> None:
        """Raise ``TooManyRequests`` when this attempt must wait; otherwise return."""
        if not self._settings.enabled:
            return
        now = self._now()
        window = _Window.at(now, self._settings.window)
        pair = self._pair(account_key, source_ip)
        keys = [
            self._lock_key(account_key),
            _window_key(pair, window.index),
            _window_key(pair, window.index - 1),
        ]
        if source_ip is not None:
            keys.append(self._known_key(account_key, source_ip))
        lock, current, previous, *known = await self._store.get_many(keys)
        waits: list[tuple[float, str]] = []
        pair_wait = window.wait_for_room(
            _count(previous), _count(current), self._settings.account_ip_limit
        )
        if pair_wait > 0:
            waits.append((pair_wait, "account_ip"))
        lock_wait = _count(lock) / 1000 - now
        # A source the account logged in from lately is not held back by strangers' failures.
        if lock_wait > 0 and not (known and known[0] is not None):
            waits.append((lock_wait, "account"))
        if waits:
            wait, limit = max(waits)
            raise TooManyRequests(wait, limit=limit)

    async def failed(self, account_key: str, source_ip: str | None) -> int:
        """Count a failed attempt; return the account's consecutive failures now."""
        if not self._settings.enabled:
            return 0
        now = self._now()
        window = _Window.at(now, self._settings.window)
        pair = self._pair(account_key, source_ip)
        failures, _ = await _together(
            self._store.incr(
                self._failures_key(account_key), ttl=self._settings.account_failure_window
            ),
            # Alive while it is the current window and then the previous one.
            self._store.incr(_window_key(pair, window.index), ttl=2 * window.length),
        )
        delay = self.delay_after(failures)
        if delay > 0:
            until_ms = int((now + delay) * 1000)
            await self._store.set(self._lock_key(account_key), b"%d" % until_ms, ttl=delay)
        return failures

    async def succeeded(self, account_key: str, source_ip: str | None) -> None:
        """A correct password: reset the account's count, remember ``source_ip`` as known."""
        if not self._settings.enabled:
            return
        index = _Window.at(self._now(), self._settings.window).index
        pair = self._pair(account_key, source_ip)
        calls = [
            self._store.delete(self._failures_key(account_key)),
            self._store.delete(self._lock_key(account_key)),
            self._store.delete(_window_key(pair, index)),
            self._store.delete(_window_key(pair, index - 1)),
        ]
        if source_ip is not None:
            calls.append(
                self._store.set(
                    self._known_key(account_key, source_ip),
                    _KNOWN,
                    ttl=self._settings.known_source_ttl,
                )
            )
        await _together(*calls)

    async def clear(self, account_key: str) -> None:
        """Forget the account's failures and end its lock (a completed password reset)."""
        if not self._settings.enabled:
            return
        await _together(
            self._store.delete(self._failures_key(account_key)),
            self._store.delete(self._lock_key(account_key)),
        )

    def delay_after(self, failures: int) -> float:
        """The lock, in seconds, after ``failures`` consecutive failures (0 below the threshold)."""
        settings = self._settings
        excess = failures - settings.account_failures
        if excess < 0:
            return 0.0
        delay = settings.account_base_delay * 2.0 ** min(excess, _MAX_EXPONENT)
        return min(settings.account_max_delay, delay)

    def _now(self) -> float:
        # Wall-clock seconds: every instance must agree on the windows and the lock's end.
        return self._clock.now().timestamp()

    @staticmethod
    def _failures_key(account_key: str) -> str:
        return _key("fail", account_key)

    @staticmethod
    def _lock_key(account_key: str) -> str:
        return _key("lock", account_key)

    @staticmethod
    def _known_key(account_key: str, source_ip: str) -> str:
        return _key("known", account_key, source_ip)

    @staticmethod
    def _pair(account_key: str, source_ip: str | None) -> str:
        return _key("acip", account_key, source_ip or _NO_IP)


def _window_key(bucket: str, index: int) -> str:
    return f"{bucket}:{index}"


class RateLimiter:
    """Attempts on authentication endpoints: ``ip_limit`` per IP and ``global_limit`` in all.

    Both per ``window`` seconds, sliding. A refused attempt is taken back out of
    both counts, so a client that keeps knocking does not use up the global
    budget, and ``Retry-After`` stays true.
    """

    def __init__(self, store: Store, settings: ThrottleSettings, *, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock

    def __repr__(self) -> str:
        return f"RateLimiter(enabled={self._settings.enabled}, store={self._store!r})"

    async def hit(self, source_ip: str | None) -> None:
        """Count one attempt from ``source_ip``; raise ``TooManyRequests`` when over a limit."""
        settings = self._settings
        if not settings.enabled:
            return
        window = _Window.at(self._clock.now().timestamp(), settings.window)
        ip_bucket = _key("ip", source_ip or _NO_IP)
        all_bucket = f"{_PREFIX}all"
        current_keys = (_window_key(ip_bucket, window.index), _window_key(all_bucket, window.index))
        ttl = 2 * window.length
        # Every call finishes before any failure is raised: no store call is left running.
        results = await asyncio.gather(
            self._store.incr(current_keys[0], ttl=ttl),
            self._store.incr(current_keys[1], ttl=ttl),
            self._store.get_many(
                [
                    _window_key(ip_bucket, window.index - 1),
                    _window_key(all_bucket, window.index - 1),
                ]
            ),
            return_exceptions=True,
        )
        ip_now, all_now = _unwrap(results[0]), _unwrap(results[1])
        ip_before, all_before = (_count(value) for value in _unwrap(results[2]))
        # Counts before this attempt: it fits when the sliding count plus one is within the limit.
        ip_wait = window.wait_for_room(ip_before, ip_now - 1, settings.ip_limit)
        all_wait = window.wait_for_room(all_before, all_now - 1, settings.global_limit)
        if ip_wait <= 0 and all_wait <= 0:
            return
        await _together(*(self._store.incr(key, -1, ttl=ttl) for key in current_keys))
        if ip_wait >= all_wait:
            raise TooManyRequests(ip_wait, limit="ip")
        raise TooManyRequests(all_wait, limit="global")

    async def first_refusal(self, limit: str, source_ip: str | None) -> bool:
        """``True`` once per window for a refusal by ``limit`` of ``source_ip``'s bucket.

        Lets the caller record one audit event per refused bucket and window
        instead of one per refused request, so a flood cannot turn into a flood
        of audit writes.
        """
        if limit == "global":
            bucket = f"{_PREFIX}refused:global"
        else:
            bucket = _key("refused", limit, source_ip or _NO_IP)
        return await self._first_in_window(bucket)

    async def first_in_window(self, kind: str, *parts: str) -> bool:
        """``True`` once per window for the bucket ``(kind, *parts)``, then ``False``.

        The same once-per-window gate as :meth:`first_refusal`, for other
        refusals whose audit record should not repeat for every request (a
        refused scope check: one per caller and route).
        """
        return await self._first_in_window(_key("refused", kind, *parts))

    async def _first_in_window(self, bucket: str) -> bool:
        window = _Window.at(self._clock.now().timestamp(), self._settings.window)
        key = _window_key(bucket, window.index)
        return await self._store.add(key, _KNOWN, ttl=window.length)
