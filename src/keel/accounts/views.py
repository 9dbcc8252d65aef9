"""``UserView``: the account as its owner sees it, and its ready JSON (``profile_json``).

``GET /users/me`` is the hottest authenticated route. Its answer travels
inside the subject's cached record (``keel.auth.SubjectRecord.profile``) as
the exact bytes of the response, rendered once when the record is loaded
from the database, so a warm request neither reads the database nor
serialises anything. A view holds no secret: no hash, no token (SEC-49).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from keel.accounts.models import User

__all__ = ["UserView", "profile_json"]


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


def profile_json(view: UserView) -> bytes:
    """The body of ``GET /users/me`` for ``view``: its declared fields, compact UTF-8 JSON."""
    document = {
        "id": view.id,
        "email": view.email,
        "email_verified": view.email_verified,
        "display_name": view.display_name,
        "roles": list(view.roles),
        "created_at": view.created_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
