"""Attempts on authentication endpoints per client and in all, in sliding windows (SEC-14).

See :mod:`keel.auth._limits` for keys, windows and what a client (a source) is.

Store calls: ``hit`` issues 2 increments and 1 ``get_many`` concurrently; on a
refusal 2 more increments (a refused attempt is not counted) and, once per
window and bucket, 1 ``add`` from :meth:`RateLimiter.first_refusal`.
``refresh`` (per session) and ``take_mail`` (per recipient): 1 increment and
1 ``get``, plus 1 increment on a refusal. A store error (``DependencyUnavailable``) propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from keel._clock import Clock
from keel.auth._limits import (
    KNOWN,
    PREFIX,
    Window,
    count,
    key,
    source_of,
    together,
    unwrap,
    window_key,
)
from keel.cache import Store
from keel.errors import TooManyRequests
from keel.settings import ThrottleSettings

__all__ = ["RateLimiter"]

_HOUR = 3600


class RateLimiter:
    """Attempts on authentication endpoints: ``ip_limit`` per client and ``global_limit`` in all.

    Both per ``window`` seconds, sliding, and per route family (``login``,
    ``refresh``, ``register``, ``password``, ``verify``): each family has
    budgets of its own, so a flood on one route cannot spend another's. A
    refused attempt is taken back out of both counts, so a client that keeps
    knocking does not use up the global budget, and ``Retry-After`` stays true.
    """

    def __init__(self, store: Store, settings: ThrottleSettings, *, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock

    def __repr__(self) -> str:
        return f"RateLimiter(enabled={self._settings.enabled}, store={self._store!r})"

    async def hit(
        self,
        source_ip: str | None,
        family: str = "auth",
        *,
        exempt: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """Count an attempt from ``source_ip`` on ``family``; ``TooManyRequests`` when over a limit.

        ``exempt`` is asked only when the global limit alone refuses: ``True``
        lets the attempt through (a known user from a known source).
        """
        settings = self._settings
        if not settings.enabled:
            return
        window = Window.at(self._clock.now().timestamp(), settings.window)
        ip_bucket = key("ip", family, self._source(source_ip))
        all_bucket = f"{PREFIX}all:{family}"
        current_keys = (window_key(ip_bucket, window.index), window_key(all_bucket, window.index))
        ttl = 2 * window.length
        # Every call finishes before any failure is raised: no store call is left running.
        results = await asyncio.gather(
            self._store.incr(current_keys[0], ttl=ttl),
            self._store.incr(current_keys[1], ttl=ttl),
            self._store.get_many(
                [
                    window_key(ip_bucket, window.index - 1),
                    window_key(all_bucket, window.index - 1),
                ]
            ),
            return_exceptions=True,
        )
        ip_now, all_now = unwrap(results[0]), unwrap(results[1])
        ip_before, all_before = (count(value) for value in unwrap(results[2]))
        # Counts before this attempt: it fits when the sliding count plus one is within the limit.
        ip_wait = window.wait_for_room(ip_before, ip_now - 1, settings.ip_limit)
        all_wait = window.wait_for_room(all_before, all_now - 1, settings.global_limit)
        if ip_wait <= 0 and all_wait <= 0:
            return
        if ip_wait <= 0 and exempt is not None and await exempt():
            return
        await together(*(self._store.incr(slot, -1, ttl=ttl) for slot in current_keys))
        if ip_wait >= all_wait:
            raise TooManyRequests(ip_wait, limit="ip")
        raise TooManyRequests(all_wait, limit="global")

    async def first_refusal(self, limit: str, source_ip: str | None, family: str = "auth") -> bool:
        """``True`` once per window for a refusal by ``limit`` of ``source_ip``'s bucket.

        Lets the caller record one audit event per refused bucket and window
        instead of one per refused request, so a flood cannot turn into a flood
        of audit writes.
        """
        if limit == "global":
            bucket = f"{PREFIX}refused:global:{family}"
        else:
            bucket = key("refused", limit, family, self._source(source_ip))
        return await self._first(bucket)

    async def first_in_window(self, kind: str, *parts: str) -> bool:
        """``True`` once per window for the bucket ``(kind, *parts)``, then ``False``.

        The same once-per-window gate as :meth:`first_refusal`, for other
        refusals whose audit record should not repeat for every request (a
        refused scope check: one per caller and route).
        """
        return await self._first(key("refused", kind, *parts))

    async def _first(self, bucket: str) -> bool:
        window = Window.at(self._clock.now().timestamp(), self._settings.window)
        return await self._store.add(window_key(bucket, window.index), KNOWN, ttl=window.length)

    async def refresh(self, session_id: str) -> None:
        """Count one refresh of ``session_id``; ``TooManyRequests`` (limit ``session``) when over
        ``refresh_session_limit`` per window. A refused refresh is not counted."""
        settings = self._settings
        if not settings.enabled:
            return
        bucket = key("session", session_id)
        wait = await self._take(bucket, settings.refresh_session_limit, settings.window)
        if wait > 0:
            raise TooManyRequests(wait, limit="session")

    async def take_mail(self, recipient_key: str) -> bool:
        """Count one mail to ``recipient_key``; ``False`` (nothing counted) beyond
        ``mail_recipient_limit`` per hour, sliding."""
        settings = self._settings
        if not settings.enabled:
            return True
        bucket = key("mail", recipient_key)
        return await self._take(bucket, settings.mail_recipient_limit, _HOUR) <= 0

    async def _take(self, bucket: str, limit: int, length: int) -> float:
        """Count one event in ``bucket``'s sliding window; over ``limit``, take it back and
        return the seconds until one fits (0 when it was counted)."""
        window = Window.at(self._clock.now().timestamp(), length)
        current = window_key(bucket, window.index)
        ttl = 2 * window.length
        results = await asyncio.gather(
            self._store.incr(current, ttl=ttl),
            self._store.get(window_key(bucket, window.index - 1)),
            return_exceptions=True,
        )
        now, before = unwrap(results[0]), count(unwrap(results[1]))
        wait = window.wait_for_room(before, now - 1, limit)
        if wait > 0:
            await self._store.incr(current, -1, ttl=ttl)
        return wait

    def _source(self, source_ip: str | None) -> str:
        return source_of(source_ip, self._settings.ipv6_prefix_length)
