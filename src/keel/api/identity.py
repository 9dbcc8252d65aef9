"""Who a caller is: the ``Principal`` and the ``Authenticator`` that finds it.

These are plain types with no dependency on the app's wiring, so ``api/state.py``
(which holds the app's authenticator) and ``api/principal.py`` (the guards, which
read the app's state) both import them from here and not from each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from starlette.requests import Request

from keel.audit.vocabulary import ActorType

__all__ = ["Authenticator", "DenyAll", "Principal"]


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
