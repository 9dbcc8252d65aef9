"""Roles: what an account may do, carried into access tokens as scopes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["KNOWN_ROLES", "ROLE_ADMIN", "ROLE_USER", "format_roles", "parse_roles"]

ROLE_USER: Final = "user"
#: Equal to ``keel.api.principal.ADMIN_SCOPE``: the admin role is the admin scope.
ROLE_ADMIN: Final = "admin"
KNOWN_ROLES: Final = frozenset({ROLE_USER, ROLE_ADMIN})


def format_roles(roles: Iterable[str]) -> str:
    """The column form: sorted, space-separated, known roles only."""
    chosen = set(roles)
    unknown = chosen - KNOWN_ROLES
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    return " ".join(sorted(chosen))


def parse_roles(column: str) -> frozenset[str]:
    """The roles stored in ``column`` (unknown names are dropped: they grant nothing)."""
    return frozenset(column.split()) & KNOWN_ROLES
