"""Roles: what an account may do. A role grants scopes; guards check scopes.

keel defines two roles, each granting the scope of its own name: ``user``
(every account) and ``admin`` (``GET /admin/*``). An application declares its
own roles and the scopes they grant, and hands them to
``create_app(roles=...)``::

    Role("moderator", scopes={"notes:moderate"})

The ``users.roles`` column holds role names. An access token carries the
role names it was issued for; on every request the roles are intersected
with the ones the account holds *now* and expanded to their scopes through
the :class:`RoleCatalog`, so removing a role from an account removes its
scopes on the next request everywhere. A name the catalog does not know
grants nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "KNOWN_ROLES",
    "ROLE_ADMIN",
    "ROLE_USER",
    "Role",
    "RoleCatalog",
    "format_roles",
    "parse_roles",
]

ROLE_USER: Final = "user"
#: Equal to ``keel.api.principal.ADMIN_SCOPE``: the admin role grants the admin scope.
ROLE_ADMIN: Final = "admin"
#: keel's own roles.
KNOWN_ROLES: Final = frozenset({ROLE_USER, ROLE_ADMIN})
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SCOPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True, slots=True)
class Role:
    """A role an application defines and the scopes it grants."""

    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"role {self.name!r}: lower-case letters, digits, '-' and '_'")
        object.__setattr__(self, "scopes", frozenset(self.scopes))
        for scope in self.scopes:
            if not _SCOPE.fullmatch(scope):
                raise ValueError(f"role {self.name!r}: scope {scope!r} is not a scope token")


_BUILTIN: Final = (
    Role(ROLE_USER, frozenset({ROLE_USER}), "every account"),
    Role(ROLE_ADMIN, frozenset({ROLE_ADMIN}), "keel's administration routes"),
)


class RoleCatalog:
    """keel's roles and an application's: names, and the scopes each grants."""

    def __init__(self, roles: Iterable[Role] = ()) -> None:
        catalog = {role.name: role for role in _BUILTIN}
        for role in roles:
            if role.name in catalog:
                raise ValueError(f"role {role.name!r} is defined twice (or is one of keel's)")
            catalog[role.name] = role
        self._roles = catalog
        self.names: frozenset[str] = frozenset(catalog)

    def scopes_for(self, roles: Iterable[str]) -> frozenset[str]:
        """Every scope ``roles`` grant (names the catalog does not know grant nothing)."""
        granted: set[str] = set()
        for name in roles:
            role = self._roles.get(name)
            if role is not None:
                granted |= role.scopes
        return frozenset(granted)


def format_roles(roles: Iterable[str], known: frozenset[str] = KNOWN_ROLES) -> str:
    """The column form: sorted, space-separated; every role must be in ``known``."""
    chosen = set(roles)
    unknown = chosen - known
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    return " ".join(sorted(chosen))


def parse_roles(column: str) -> frozenset[str]:
    """The role names stored in ``column`` (what they grant is the catalog's business)."""
    return frozenset(name for name in column.split() if _NAME.fullmatch(name))
