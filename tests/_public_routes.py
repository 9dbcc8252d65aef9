"""The operations anyone may call, without credentials: one reviewed list for the tests.

``tests/api/test_sec_46_routes.py`` proves that every other route refuses an
anonymous caller, and ``tests/contract/test_openapi.py`` that the schema declares
the bearer requirement on exactly the others. Keep it short: every entry is a
decision.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PUBLIC_API_OPERATIONS", "PUBLIC_PROBES_AND_DOCS"]

#: keel's API operations that need no access token.
PUBLIC_API_OPERATIONS: Final[frozenset[tuple[str, str]]] = frozenset(
    {
        ("POST", "/auth/register"),
        ("POST", "/auth/verify-email"),
        ("POST", "/auth/login"),
        ("POST", "/auth/token"),
        ("POST", "/auth/refresh"),
        ("POST", "/auth/password/forgot"),
        ("POST", "/auth/password/reset"),
        ("GET", "/.well-known/jwks.json"),
    }
)

#: The health probes and (where enabled) the API documentation: not API operations.
PUBLIC_PROBES_AND_DOCS: Final[frozenset[tuple[str, str]]] = frozenset(
    {
        ("GET", "/livez"),
        ("HEAD", "/livez"),
        ("GET", "/readyz"),
        ("HEAD", "/readyz"),
        ("GET", "/docs"),
        ("HEAD", "/docs"),
        ("GET", "/openapi.json"),
        ("HEAD", "/openapi.json"),
    }
)
