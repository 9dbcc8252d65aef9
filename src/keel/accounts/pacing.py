"""Time floors: answers whose duration could tell an attacker something take a fixed minimum.

Registration, a forgotten-password request and an e-mail change answer the
same whether the address is taken or free, but the two paths do different
database work (a new row or a notice, a reset token or none): measured, the
difference is under a millisecond and yet stable enough to tell apart. A
refused password check against a legacy or outdated hash costs what *that*
hash costs, not what the dummy verification of an unknown address costs.

Rather than make every path do identical work (which the next change to one
path would quietly undo), these operations answer no sooner than a floor
measured from their start: the work happens, then the remainder of the floor
is slept. The sleep holds no lock, thread or connection, only the request. A
path that takes longer than its floor is not padded (under heavy load the
floor hides less), so each floor is set above its path's usual cost: the
enumeration floor above an argon2 hash plus a transaction, the failed-login
floor above the slowest stored hash's verification.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

__all__ = ["Floors", "floored", "floored_failure"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class Floors(Protocol):
    """What a floored method's owner exposes: the floors in seconds (0 turns one off)."""

    @property
    def enumeration_floor(self) -> float: ...

    @property
    def failed_login_floor(self) -> float: ...


class _HasFloors(Protocol):
    @property
    def floors(self) -> Floors: ...


_S = TypeVar("_S", bound=_HasFloors)


async def _sleep_rest(started: float, floor: float) -> None:
    remaining = floor - (time.monotonic() - started)
    if remaining > 0:
        await asyncio.sleep(remaining)


def floored(
    *, when: str | None = None
) -> Callable[
    [Callable[Concatenate[_S, _P], Awaitable[_R]]], Callable[Concatenate[_S, _P], Awaitable[_R]]
]:
    """Make the method answer (or raise) no sooner than the owner's enumeration floor.

    ``when`` names a keyword argument: the floor applies only when it is
    given and not ``None`` (an e-mail change, not a display-name edit).
    A cancelled call is not padded.
    """

    def decorate(
        method: Callable[Concatenate[_S, _P], Awaitable[_R]],
    ) -> Callable[Concatenate[_S, _P], Awaitable[_R]]:
        @functools.wraps(method)
        async def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            floor = self.floors.enumeration_floor
            if floor <= 0 or (when is not None and kwargs.get(when) is None):
                return await method(self, *args, **kwargs)
            started = time.monotonic()
            try:
                result = await method(self, *args, **kwargs)
            except Exception:
                await _sleep_rest(started, floor)
                raise
            await _sleep_rest(started, floor)
            return result

        return wrapper

    return decorate


def floored_failure(
    refusal: type[Exception],
) -> Callable[
    [Callable[Concatenate[_S, _P], Awaitable[_R]]], Callable[Concatenate[_S, _P], Awaitable[_R]]
]:
    """Make a ``refusal`` raised by the method take at least the failed-login floor.

    Success is not padded: a correct password tells its holder nothing new.
    """

    def decorate(
        method: Callable[Concatenate[_S, _P], Awaitable[_R]],
    ) -> Callable[Concatenate[_S, _P], Awaitable[_R]]:
        @functools.wraps(method)
        async def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            started = time.monotonic()
            try:
                return await method(self, *args, **kwargs)
            except refusal:
                await _sleep_rest(started, self.floors.failed_login_floor)
                raise

        return wrapper

    return decorate
