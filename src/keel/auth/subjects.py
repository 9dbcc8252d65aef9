"""What keel.auth needs to know about a token's subject, and how it is kept in a cache.

A signed access token says who it was issued to and when; whether that
subject may still use it is a fact that changes after issuance (disabled,
"log out everywhere", a role taken away: SEC-36). That fact is a
:class:`SubjectState`. A :class:`SubjectRecord` is the state as the database
had it at one ``version`` of the user's row, plus the owner's view of the
account (``profile``, ready JSON that keel.auth never reads), which is what a
cache keeps: ``encode_record``/``decode_record`` turn it into the versioned
bytes of :meth:`keel.cache.Store.set_if_newer`, so a slow writer holding an
older version never replaces a newer one.

keel.auth never imports keel.accounts: ``keel.api`` adapts the accounts side's
user row to a :class:`SubjectRecord` (a :data:`RecordLoader`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeAlias

from keel.cache.store import MAX_VERSION, split_versioned, versioned

__all__ = [
    "DEFAULT_STATE_TTL",
    "UNKNOWN_STATE_TTL",
    "UNKNOWN_SUBJECT",
    "RecordLoader",
    "StateLoader",
    "SubjectRecord",
    "SubjectState",
    "decode_record",
    "encode_record",
]

#: Seconds a cached subject record lives: the bound on staleness if a write-through is lost.
DEFAULT_STATE_TTL: Final = 60.0
#: Seconds "no such subject" is cached.
UNKNOWN_STATE_TTL: Final = 10.0


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


@dataclass(frozen=True, slots=True)
class SubjectRecord:
    """A subject's state at ``version`` of its database row, with its owner's ``profile``.

    ``version`` grows with every change of the row; ``profile`` is the JSON
    the owner is shown (``GET /users/me``), or ``None`` where nobody asked for
    one. A record of a subject that does not exist is :data:`UNKNOWN_SUBJECT`.
    """

    version: int
    state: SubjectState | None
    profile: bytes | None = None

    @property
    def known(self) -> bool:
        return self.state is not None


#: The record of a subject with no row: newer than any version, so it wins every race.
UNKNOWN_SUBJECT: Final = SubjectRecord(version=MAX_VERSION, state=None)

#: Loads a subject's current state from the source of truth; ``None`` when unknown.
StateLoader: TypeAlias = Callable[[str], Awaitable[SubjectState | None]]
#: Loads a subject's current record from the source of truth (``UNKNOWN_SUBJECT`` when gone).
RecordLoader: TypeAlias = Callable[[str], Awaitable[SubjectRecord]]


class UnreadableRecord(ValueError):
    """A cache entry that is not a subject record this version wrote."""


def encode_record(record: SubjectRecord) -> bytes:
    """The versioned bytes of ``record`` for the cache."""
    state = record.state
    if state is None:
        document: dict[str, object] = {"known": False}
    else:
        document = {
            "known": True,
            "active": state.active,
            "valid_after": state.tokens_valid_after.timestamp(),
            "scopes": sorted(state.scopes),
            "profile": None if record.profile is None else record.profile.decode("utf-8"),
        }
    return versioned(record.version, json.dumps(document, separators=(",", ":")).encode("utf-8"))


# The same few hundred bytes come back on every request of a subject: decode them once.
# Pure and immutable in, immutable out; failures (exceptions) are not cached.
@functools.lru_cache(maxsize=4096)
def decode_record(raw: bytes) -> SubjectRecord:
    """The record in ``raw`` (from :func:`encode_record`); ``UnreadableRecord`` if it is not one."""
    try:
        version, payload = split_versioned(raw)
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise UnreadableRecord("not a versioned JSON record") from exc
    if not isinstance(document, dict):
        raise UnreadableRecord("malformed")
    known = document.get("known")
    if known is False:
        return SubjectRecord(version=version, state=None)
    active = document.get("active")
    valid_after = document.get("valid_after")
    scopes = document.get("scopes")
    profile = document.get("profile")
    if (
        known is not True
        or not isinstance(active, bool)
        or not isinstance(valid_after, int | float)
        or isinstance(valid_after, bool)
        or not math.isfinite(valid_after)
        or not isinstance(scopes, list)
        or not all(isinstance(scope, str) for scope in scopes)
        or not (profile is None or isinstance(profile, str))
    ):
        raise UnreadableRecord("malformed")
    try:
        when = datetime.fromtimestamp(valid_after, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise UnreadableRecord("valid_after out of range") from exc
    return SubjectRecord(
        version=version,
        state=SubjectState(active=active, tokens_valid_after=when, scopes=frozenset(scopes)),
        profile=None if profile is None else profile.encode("utf-8"),
    )
