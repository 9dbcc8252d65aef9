"""What keel.auth needs to know about a token's subject, shared through the cache store.

A signed access token says who it was issued to and when; whether that
subject may still use it is a fact that changes after issuance (disabled,
"log out everywhere", a role taken away: SEC-36). That fact is a
:class:`SubjectState`, kept in the :class:`~keel.cache.Store` under
``auth:subject:<id>`` so every worker and every instance reads the same answer
on the next request:

- the side that changes a subject (accounts) calls :func:`publish_subject_state`
  **after** its transaction commits (write-through: the next request anywhere
  sees the new state; ``None`` for a deleted subject), or
  :func:`forget_subject` when it cannot say what the new state is;
- :func:`cached_subject_state` reads it on every authenticated request and,
  on a miss, asks the :data:`StateLoader` (the database) once and fills the
  cache with ``add`` (``SET NX``), so a fill that raced a publish never
  overwrites the newer published value;
- entries expire after a short TTL (60 s by default): a publish lost to a
  crash between commit and publish is stale for at most that long.

keel.auth never imports keel.accounts: ``keel.api`` adapts the accounts side's
user view to :class:`SubjectState`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeAlias

from keel.cache import Store

__all__ = [
    "DEFAULT_STATE_TTL",
    "UNKNOWN_STATE_TTL",
    "StateLoader",
    "SubjectState",
    "cached_subject_state",
    "forget_subject",
    "publish_subject_state",
    "subject_key",
    "subject_state_from",
]

#: Seconds a cached subject state lives: the bound on staleness if a publish is lost.
DEFAULT_STATE_TTL: Final = 60.0
#: Seconds "no such subject" is cached: short, since a replica may lag behind a new row.
UNKNOWN_STATE_TTL: Final = 10.0

_KEY_PREFIX: Final = "auth:subject:"
_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class SubjectState:
    """Whether a subject's access tokens may be used, and what they may do.

    ``tokens_valid_after`` is compared with a token's ``iat``, which is whole
    seconds: a token is refused when its ``iat`` is earlier than
    ``tokens_valid_after`` truncated to the second. So a token issued in the
    same second as the bump, just after it (the fresh token a password change
    hands back), is accepted; so is one issued in that second just before it.
    ``scopes`` are what the subject holds now; a token's scopes are intersected
    with them, so a scope taken away stops working at once.
    """

    active: bool
    tokens_valid_after: datetime
    scopes: frozenset[str]

    def __post_init__(self) -> None:
        if self.tokens_valid_after.tzinfo is None:
            raise ValueError("tokens_valid_after must be an aware datetime")
        if not isinstance(self.scopes, frozenset):
            raise TypeError("scopes is a frozenset of scope names")


#: Loads a subject's current state from the source of truth; ``None`` when unknown.
StateLoader: TypeAlias = Callable[[str], Awaitable[SubjectState | None]]


def subject_key(subject_id: str) -> str:
    """The cache key of ``subject_id``'s state."""
    return _KEY_PREFIX + subject_id


def _encode(state: SubjectState | None) -> bytes:
    if state is None:
        document: dict[str, object] = {"v": _VERSION, "known": False}
    else:
        document = {
            "v": _VERSION,
            "known": True,
            "active": state.active,
            "valid_after": state.tokens_valid_after.timestamp(),
            "scopes": sorted(state.scopes),
        }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


class _Unreadable(ValueError):
    """A cache entry that is not a subject state this version wrote."""


# The same few hundred bytes come back on every request of a subject: decode them once.
# Pure and immutable in, immutable out; failures (exceptions) are not cached.
@functools.lru_cache(maxsize=4096)
def _decode(raw: bytes) -> SubjectState | None:
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Unreadable("not JSON") from exc
    if not isinstance(document, dict) or document.get("v") != _VERSION:
        raise _Unreadable("unknown version")
    known = document.get("known")
    if known is False:
        return None
    active = document.get("active")
    valid_after = document.get("valid_after")
    scopes = document.get("scopes")
    if (
        known is not True
        or not isinstance(active, bool)
        or not isinstance(valid_after, int | float)
        or isinstance(valid_after, bool)
        or not math.isfinite(valid_after)
        or not isinstance(scopes, list)
        or not all(isinstance(scope, str) for scope in scopes)
    ):
        raise _Unreadable("malformed")
    try:
        when = datetime.fromtimestamp(valid_after, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise _Unreadable("valid_after out of range") from exc
    return SubjectState(active=active, tokens_valid_after=when, scopes=frozenset(scopes))


async def publish_subject_state(
    store: Store, subject_id: str, state: SubjectState | None, *, ttl: float = DEFAULT_STATE_TTL
) -> None:
    """Write ``state`` through to the cache: every worker sees it on its next request.

    ``None`` publishes "no such subject" (a deleted account). Call it after the
    change has committed, never before: a rolled-back change must not be visible.
    """
    await store.set(subject_key(subject_id), _encode(state), ttl=ttl)


async def forget_subject(store: Store, subject_id: str) -> None:
    """Drop the cached state: the next request reloads it from the ``StateLoader``.

    Prefer :func:`publish_subject_state`: a request that loaded the old state
    just before the change may still cache it (for at most its TTL) after a
    forget, but never after a publish.
    """
    await store.delete(subject_key(subject_id))


async def cached_subject_state(
    store: Store,
    subject_id: str,
    loader: StateLoader,
    *,
    ttl: float = DEFAULT_STATE_TTL,
) -> SubjectState | None:
    """The subject's state from the cache, or from ``loader`` on a miss (then cached).

    ``None`` means the subject is unknown (that too is cached, for
    :data:`UNKNOWN_STATE_TTL` at most). An unreadable entry counts as a miss.
    """
    raw = await store.get(subject_key(subject_id))
    return await subject_state_from(store, subject_id, raw, loader, ttl=ttl)


async def subject_state_from(
    store: Store,
    subject_id: str,
    raw: bytes | None,
    loader: StateLoader,
    *,
    ttl: float = DEFAULT_STATE_TTL,
) -> SubjectState | None:
    """The state in ``raw`` (what ``store`` held under :func:`subject_key`), else load it.

    For a caller that already read the entry, batched with other keys in one
    ``get_many``: the rest is :func:`cached_subject_state`'s (a missing or
    unreadable entry is loaded and filled with ``add``).
    """
    key = subject_key(subject_id)
    if raw is not None:
        try:
            return _decode(raw)
        except _Unreadable:
            await store.delete(key)
    state = await loader(subject_id)
    # add, not set: a publish that landed while we were loading is newer than what we read.
    lifetime = ttl if state is not None else min(ttl, UNKNOWN_STATE_TTL)
    await store.add(key, _encode(state), ttl=lifetime)
    return state
