"""Brute-force limits on password checks, shared through the cache store (SEC-13, SEC-15, SEC-16).

:class:`LoginThrottle` guards every password check (it fits ``keel.accounts``'
``LoginGuard`` protocol by shape):

- per account, consecutive failures from any source. From the
  ``account_failures``-th on, every failure locks the account for
  ``account_base_delay * 2 ** (failures - threshold)`` seconds (at most
  ``account_max_delay``: a lock is always temporary, SEC-15). The lock applies
  to sources the account has not logged in from within ``known_source_ttl``,
  so a stranger hammering an account cannot lock its owner out of their usual
  place. The count is forgotten ``account_failure_window`` seconds after the
  first failure it holds (the store's fixed-window ``incr``), on a success,
  and on :meth:`LoginThrottle.clear` (a completed password reset). Only a
  verified account's login makes a source known, and a new password forgets
  them all (:meth:`LoginThrottle.forget_known_sources`);
- per (account, source), failures in a sliding window of ``window`` seconds;
  this one applies to known sources too.

An attempt is counted before its password is checked (:meth:`LoginThrottle.reserve`):
both counts are incremented first, as if it failed, and a success takes them
back (:meth:`LoginThrottle.succeeded`). An attempt that would lock the account
if it failed also takes the lock first, with a compare-and-set on the lock's
generation (``set_if_newer``): of any number of concurrent attempts that saw
the same lock end, one gets its password checked and the others wait. A
burst sent when a lock ends is one guess, not as many guesses as requests
(its number may include concurrent attempts refused after it: its lock is then
longer, never shorter).
An attempt whose outcome never comes (a crash, a timeout) stays counted.

Sources, keys and windows: :mod:`keel.auth._limits` (an IPv6 client is its
/64, by default). The same keys are derived for an account that exists and
one that does not, so the answers are the same for both.

Store calls, each group issued concurrently:

- ``reserve``: 1 ``get_many`` (lock, both (account, source) windows,
  known source); then 2 increments; from the threshold on (unknown sources)
  1 ``set_if_newer``; a refusal after the increments takes them back (2 more);
- ``failed``: 1 ``get``, plus 1 ``set_if_newer`` when a known source's failure locks;
- ``succeeded``: 4 deletes and 1 write; ``clear``: 2 deletes.

A store error (``DependencyUnavailable``) propagates: the limits neither allow
nor deny silently when the store cannot answer, and the caller answers 503.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from keel._clock import Clock
from keel.auth._limits import Window, count, key, source_of, together, window_key
from keel.cache import Store
from keel.cache.store import split_versioned, versioned
from keel.errors import TooManyRequests
from keel.settings import ThrottleSettings

__all__ = ["LoginThrottle"]

# Exponents beyond this make the delay astronomically larger than any cap anyway.
_MAX_EXPONENT: Final = 64
# A lock ending within this of the one a failure asks for is that lock (Retry-After is whole s).
_LOCK_SLACK: Final = 1.0


@dataclass(frozen=True, slots=True)
class _Lock:
    """The account's lock: its generation (moved by each new lock) and its end (epoch s)."""

    generation: int
    until: float

    @classmethod
    def parse(cls, value: bytes | None) -> _Lock:
        if value is None:
            return cls(0, 0.0)
        try:
            generation, payload = split_versioned(value)
        except ValueError:  # written before locks had generations: the end alone
            return cls(0, int(value) / 1000)
        return cls(generation, int(payload) / 1000)

    def next(self, until: float) -> bytes:
        return versioned(self.generation + 1, b"%d" % int(until * 1000))


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the store held for one attempt, read in one round trip."""

    lock: _Lock
    current: int
    previous: int
    known: bool


class LoginThrottle:
    """Per-account and per-(account, source) limits on password checks."""

    def __init__(self, store: Store, settings: ThrottleSettings, *, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock

    def __repr__(self) -> str:
        return f"LoginThrottle(enabled={self._settings.enabled}, store={self._store!r})"

    async def check(self, account_key: str, source_ip: str | None) -> None:
        """Raise ``TooManyRequests`` when an attempt now would wait; count nothing."""
        if not self._settings.enabled:
            return
        now = self._now()
        window = Window.at(now, self._settings.window)
        self._refuse_if_waiting(await self._read(account_key, source_ip, window), window, now)

    async def is_known(self, account_key: str, source_ip: str | None) -> bool:
        """Whether the account logged in from ``source_ip`` within ``known_source_ttl``
        (and since its known sources were last forgotten)."""
        if source_ip is None:
            return False
        known, forgotten = await self._store.get_many(
            [self._known_key(account_key, source_ip), self._forgotten_key(account_key)]
        )
        return _still_known(known, forgotten)

    async def reserve(self, account_key: str, source_ip: str | None) -> int:
        """Count an attempt before its password is checked; its failure number if it fails.

        ``TooManyRequests`` (nothing counted) when it must wait. The caller
        reports the outcome: :meth:`failed` with the number, or :meth:`succeeded`.
        """
        if not self._settings.enabled:
            return 0
        settings = self._settings
        now = self._now()
        window = Window.at(now, settings.window)
        seen = await self._read(account_key, source_ip, window)
        self._refuse_if_waiting(seen, window, now)
        pair_key = window_key(self._pair(account_key, source_ip), window.index)
        failures_key = self._failures_key(account_key)
        pair_now, attempt = await together(
            # Alive while it is the current window and then the previous one.
            self._store.incr(pair_key, ttl=2 * window.length),
            self._store.incr(failures_key, ttl=settings.account_failure_window),
        )
        refusal: TooManyRequests | None = None
        pair_wait = window.wait_for_room(seen.previous, pair_now - 1, settings.account_ip_limit)
        if pair_wait > 0:
            refusal = TooManyRequests(pair_wait, limit="account_ip")
        elif not seen.known and (delay := self.delay_after(attempt)) > 0:
            # This attempt locks the account if it fails: it takes the lock now, or waits.
            lock_key = self._lock_key(account_key)
            if not await self._store.set_if_newer(
                lock_key, seen.lock.next(now + delay), ttl=self._lock_ttl(delay)
            ):
                held = _Lock.parse(await self._store.get(lock_key))
                refusal = TooManyRequests(max(held.until - now, 1.0), limit="account")
        if refusal is None:
            return attempt
        await together(
            self._store.incr(pair_key, -1, ttl=2 * window.length),
            self._store.incr(failures_key, -1, ttl=settings.account_failure_window),
        )
        raise refusal

    async def failed(
        self, account_key: str, source_ip: str | None, attempt: int | None = None
    ) -> int:
        """A wrong password; return the account's consecutive failures now.

        ``attempt`` is the number :meth:`reserve` gave (the failure is counted
        already); without it the failure is counted now.
        """
        if not self._settings.enabled:
            return 0
        now = self._now()
        if attempt is None:
            window = Window.at(now, self._settings.window)
            attempt, _ = await together(
                self._store.incr(
                    self._failures_key(account_key), ttl=self._settings.account_failure_window
                ),
                self._store.incr(
                    window_key(self._pair(account_key, source_ip), window.index),
                    ttl=2 * window.length,
                ),
            )
        delay = self.delay_after(attempt)
        if delay > 0:
            lock_key = self._lock_key(account_key)
            lock = _Lock.parse(await self._store.get(lock_key))
            # A stranger's attempt took its lock when reserved; a known source's takes it now.
            if lock.until < now + delay - _LOCK_SLACK:
                await self._store.set_if_newer(
                    lock_key, lock.next(now + delay), ttl=self._lock_ttl(delay)
                )
        return attempt

    async def succeeded(
        self, account_key: str, source_ip: str | None, *, remember_source: bool = True
    ) -> None:
        """A correct password: reset the account's count, remember ``source_ip`` as known.

        ``remember_source=False`` (an account whose address is unverified) resets
        the count but makes no source known.
        """
        if not self._settings.enabled:
            return
        now = self._now()
        index = Window.at(now, self._settings.window).index
        pair = self._pair(account_key, source_ip)
        calls = [
            self._store.delete(self._failures_key(account_key)),
            self._store.delete(self._lock_key(account_key)),
            self._store.delete(window_key(pair, index)),
            self._store.delete(window_key(pair, index - 1)),
        ]
        if source_ip is not None and remember_source:
            calls.append(
                self._store.set(
                    self._known_key(account_key, source_ip),
                    b"%d" % _millis(now),
                    ttl=self._settings.known_source_ttl,
                )
            )
        await together(*calls)

    async def forget_known_sources(self, account_key: str) -> None:
        """Every source the account logged in from so far is a stranger again (a new password).

        One write: the moment of forgetting; a source is known only when its
        login came after it. Kept for ``known_source_ttl``, by when every older
        known source has expired anyway.
        """
        if not self._settings.enabled:
            return
        await self._store.set(
            self._forgotten_key(account_key),
            b"%d" % _millis(self._now()),
            ttl=self._settings.known_source_ttl,
        )

    async def clear(self, account_key: str) -> None:
        """Forget the account's failures and end its lock (a completed password reset)."""
        if not self._settings.enabled:
            return
        await together(
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

    async def _read(self, account_key: str, source_ip: str | None, window: Window) -> _Seen:
        pair = self._pair(account_key, source_ip)
        keys = [
            self._lock_key(account_key),
            window_key(pair, window.index),
            window_key(pair, window.index - 1),
        ]
        if source_ip is not None:
            keys += [self._known_key(account_key, source_ip), self._forgotten_key(account_key)]
        lock, current, previous, *known = await self._store.get_many(keys)
        return _Seen(
            lock=_Lock.parse(lock),
            current=count(current),
            previous=count(previous),
            known=_still_known(*known),
        )

    def _refuse_if_waiting(self, seen: _Seen, window: Window, now: float) -> None:
        waits: list[tuple[float, str]] = []
        limit = self._settings.account_ip_limit
        pair_wait = window.wait_for_room(seen.previous, seen.current, limit)
        if pair_wait > 0:
            waits.append((pair_wait, "account_ip"))
        lock_wait = seen.lock.until - now
        # A source the account logged in from lately is not held back by strangers' failures.
        if lock_wait > 0 and not seen.known:
            waits.append((lock_wait, "account"))
        if waits:
            wait, refused_by = max(waits)
            raise TooManyRequests(wait, limit=refused_by)

    def _lock_ttl(self, delay: float) -> float:
        # The lock's generation outlives the lock, so a compare-and-set never sees it reset.
        return max(delay, float(self._settings.account_failure_window))

    def _now(self) -> float:
        # Wall-clock seconds: every instance must agree on the windows and the lock's end.
        return self._clock.now().timestamp()

    def _source(self, source_ip: str | None) -> str:
        return source_of(source_ip, self._settings.ipv6_prefix_length)

    @staticmethod
    def _failures_key(account_key: str) -> str:
        return key("fail", account_key)

    @staticmethod
    def _lock_key(account_key: str) -> str:
        return key("lock", account_key)

    def _known_key(self, account_key: str, source_ip: str) -> str:
        return key("known", account_key, self._source(source_ip))

    def _pair(self, account_key: str, source_ip: str | None) -> str:
        return key("acip", account_key, self._source(source_ip))

    @staticmethod
    def _forgotten_key(account_key: str) -> str:
        return key("forgotten", account_key)


def _millis(now: float) -> int:
    return int(now * 1000)


def _still_known(known: bytes | None = None, forgotten: bytes | None = None) -> bool:
    """A known source's login (ms; ``1`` from older versions) came after the last forgetting."""
    return known is not None and count(known) > count(forgotten)
