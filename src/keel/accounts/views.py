"""``UserView``: the account as its owner sees it, and the shared cache that serves it.

``GET /users/me`` is the hottest authenticated route, so it is answered from
the cache store (Redis in production: shared by every worker and instance)
without touching the database. ``UserViewCache`` keeps one JSON entry per
user under ``accounts:view:<id>``:

- a read that misses loads the row and fills the entry with ``add`` (set if
  absent), never ``set``;
- every committed change *writes* the fresh view with ``set`` (or deletes it
  when the account goes).

So a slow reader that loaded the row before a change committed cannot
overwrite the writer's fresh entry: if the writer got there first, the
reader's ``add`` fails; if the reader got there first, the writer replaces
it. Entries also expire (``VIEW_TTL``), which bounds staleness when a cache
write fails, or on the per-process memory store of a multi-worker deploy
without Redis. A view holds no secret: no hash, no token (SEC-49).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from keel._logging import event
from keel.accounts.models import User
from keel.cache import Store
from keel.errors import CacheUnavailable

__all__ = ["VIEW_TTL", "UserView", "UserViewCache"]

VIEW_TTL: Final = 60.0
_PREFIX: Final = "accounts:view:"

_log = logging.getLogger("keel.accounts.views")


@dataclass(frozen=True, slots=True)
class UserView:
    """What ``/users/me`` shows: declared fields only, nothing secret."""

    id: str
    email: str
    email_verified: bool
    display_name: str | None
    roles: tuple[str, ...]
    is_active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(
            id=str(user.id),
            email=user.email,
            email_verified=user.email_verified_at is not None,
            display_name=user.display_name,
            roles=tuple(sorted(user.role_set)),
            is_active=user.is_active,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "email_verified": self.email_verified,
            "display_name": self.display_name,
            "roles": list(self.roles),
            "is_active": self.is_active,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserView:
        created_at = datetime.fromisoformat(data["created_at"])
        updated_at = datetime.fromisoformat(data["updated_at"])
        if created_at.tzinfo is None or updated_at.tzinfo is None:
            raise ValueError("naive timestamp in a cached view")
        return cls(
            id=str(data["id"]),
            email=str(data["email"]),
            email_verified=bool(data["email_verified"]),
            display_name=None if data["display_name"] is None else str(data["display_name"]),
            roles=tuple(str(role) for role in data["roles"]),
            is_active=bool(data["is_active"]),
            created_at=created_at,
            updated_at=updated_at,
        )


class UserViewCache:
    """User views in a cache ``Store``; every failure of the store degrades to a miss."""

    def __init__(self, store: Store, *, ttl: float = VIEW_TTL) -> None:
        self._store = store
        self._ttl = ttl

    @staticmethod
    def key(user_id: str) -> str:
        return _PREFIX + user_id

    async def get(self, user_id: str) -> UserView | None:
        try:
            raw = await self._store.get(self.key(user_id))
        except CacheUnavailable:
            return None
        return self.parse(user_id, raw)

    def parse(self, user_id: str, raw: bytes | None) -> UserView | None:
        """The view in ``raw``, the entry under ``key(user_id)`` read elsewhere (a prefetch)."""
        if raw is None:
            return None
        try:
            return UserView.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            event(_log, logging.WARNING, "user_view_cache_corrupt", user_id=user_id)
            return None

    async def fill(self, view: UserView) -> None:
        """Cache ``view`` read from the database, unless a fresher one is already there."""
        with contextlib.suppress(CacheUnavailable):  # the next read loads it again
            await self._store.add(self.key(view.id), _encode(view), ttl=self._ttl)

    async def refresh(self, view: UserView) -> None:
        """Replace the entry after a committed change."""
        try:
            await self._store.set(self.key(view.id), _encode(view), ttl=self._ttl)
        except CacheUnavailable:
            self._stale(view.id)

    async def discard(self, user_id: str) -> None:
        try:
            await self._store.delete(self.key(user_id))
        except CacheUnavailable:
            self._stale(user_id)

    def _stale(self, user_id: str) -> None:
        # Stale for at most the TTL; say so where operators look.
        event(_log, logging.ERROR, "user_view_cache_write_failed", user_id=user_id)


def _encode(view: UserView) -> bytes:
    return json.dumps(view.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
