"""Ids from paths, canonicalised once at the edge.

Every id keel issues (users, sessions) is a UUID, written in its canonical
form: lower case, hyphenated. A path may spell the same UUID other ways (upper
case, braces, ``urn:uuid:``, no hyphens); the database finds the same row for
each, so a deny-list entry, a cache key or an audit row keyed on the raw text
would name a different thing than the row it acted on. The dependencies here
parse the path segment once and hand the route the canonical text only, or
answer 404 for anything that is not a UUID (as Ory Kratos does: its path ids
go through one UUID parser that accepts these spellings).

Declare them after the route's authentication dependency: dependencies run in
order, and an anonymous or under-privileged caller must get 401/403, not a 404
that says something about the path.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Final

from fastapi import Depends, Path

from keel.accounts import UserNotFound
from keel.errors import NotFound

__all__ = ["SessionId", "UserId", "canonical_uuid"]

#: The longest spelling ``uuid.UUID`` accepts: ``urn:uuid:{…36…}``.
_SPELLING_MAX: Final = 47


def canonical_uuid(text: str) -> str | None:
    """The canonical form of the UUID ``text`` spells, or ``None`` if it spells none."""
    if len(text) > _SPELLING_MAX:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


_UUID_PATH: Final = {"format": "uuid"}


async def _session_id(session_id: Annotated[str, Path(json_schema_extra=_UUID_PATH)]) -> str:
    canonical = canonical_uuid(session_id)
    if canonical is None:
        raise NotFound()
    return canonical


async def _user_id(user_id: Annotated[str, Path(json_schema_extra=_UUID_PATH)]) -> str:
    canonical = canonical_uuid(user_id)
    if canonical is None:
        raise UserNotFound()
    return canonical


#: The ``{session_id}`` path segment, canonical (404 ``not_found`` if it is no UUID).
SessionId = Annotated[str, Depends(_session_id)]
#: The ``{user_id}`` path segment, canonical (404 ``user_not_found`` if it is no UUID).
UserId = Annotated[str, Depends(_user_id)]
