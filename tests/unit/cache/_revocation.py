"""A real revocation written into a store, and a check that reads it back from the store alone.

The eviction tests flood a store and then ask whether a session ended before
the flood is still refused. The check runs through ``SecurityState`` with a
record that fails if asked about the session: the answer must come from the
store, as it does for every worker that reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from keel.auth import SecurityState, SubjectRecord, SubjectState
from keel.cache import LocalInvalidations, Store

__all__ = ["revoke", "still_revoked"]

_STATE = SubjectState(True, datetime(2000, 1, 1, tzinfo=UTC), frozenset({"user"}))


async def _record(subject_id: str) -> SubjectRecord:
    return SubjectRecord(1, _STATE)


async def _not_asked(subject_id: str, session_id: str) -> bool:
    raise AssertionError("the store no longer holds the session's end")


def _state(store: Store) -> SecurityState:
    return SecurityState(store, LocalInvalidations(), load_subject=_record, load_session=_not_asked)


async def revoke(store: Store, subject: str, session_id: str) -> None:
    """End ``session_id`` of ``subject`` as a logout does after its commit."""
    state = _state(store)
    await state.sessions_ended(subject, [session_id])
    await state.record(subject)  # its record is cached too, as after any request


async def still_revoked(store: Store, subject: str, session_id: str) -> bool:
    """Whether the store alone still says the session ended."""
    _, live = await _state(store).check(subject, session_id)
    return not live
