"""Who is calling: the ``Principal``, how it is found, and the guards routes use.

An ``Authenticator`` turns a request into a ``Principal`` or ``None``. keel's
default denies everyone, so a guarded route is never open by accident; the
accounts issue plugs in access-token authentication. Guards raise domain
errors (``Unauthenticated`` → 401 with ``WWW-Authenticate: Bearer``,
``Forbidden`` → 403); ``api/errors.py`` maps them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from fastapi import Depends, Request

from keel.api.state import get_context
from keel.audit.vocabulary import ActorType
from keel.errors import Forbidden, Unauthenticated

__all__ = [
    "ADMIN_SCOPE",
    "Authenticator",
    "DenyAll",
    "Principal",
    "current_principal",
    "require_scope",
]

ADMIN_SCOPE = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and what it may do."""

    subject: str
    actor_type: ActorType = ActorType.USER
    scopes: frozenset[str] = field(default_factory=frozenset)


class Authenticator(Protocol):
    """Finds the caller of a request; ``None`` when there are no valid credentials."""

    async def authenticate(self, request: Request) -> Principal | None: ...


class DenyAll:
    """The default: nobody is authenticated."""

    async def authenticate(self, request: Request) -> Principal | None:
        return None


async def current_principal(request: Request) -> Principal:
    """The authenticated caller, or ``Unauthenticated`` (one opaque 401)."""
    principal = await get_context(request).authenticator.authenticate(request)
    if principal is None:
        raise Unauthenticated()
    return principal


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller, who must hold ``scope`` (403 otherwise)."""

    async def guard(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        if scope not in principal.scopes:
            raise Forbidden()
        return principal

    guard.__name__ = f"require_scope_{scope}"
    return guard
