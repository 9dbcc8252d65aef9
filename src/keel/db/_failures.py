"""Which exceptions mean "the database cannot serve right now" (``DatabaseUnavailable``).

Refused, unreachable, timed out, pool exhausted, server shutting down, connection
killed, and transactions PostgreSQL ended so that another could go on: each is
transient, and the caller gets a 503 with Retry-After. Everything else (integrity
errors, SQL mistakes) is left to the caller.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import exc as sa_exc

__all__ = ["is_unavailable_error"]

_UNAVAILABLE_SQLSTATE_PREFIXES: Final[tuple[str, ...]] = (
    "08",  # connection exception
    "28",  # invalid authorization specification
    "3D",  # invalid catalog name (no such database)
    "53",  # insufficient resources (too many connections, disk full)
    "57P",  # operator intervention (admin/crash shutdown, cannot connect now)
    # Transient transaction failures: PostgreSQL ended this transaction so that another could
    # go on. Retrying the request succeeds; to the caller it is a 503 with Retry-After.
    "40P01",  # deadlock_detected
    "40001",  # serialization_failure
)
_UNAVAILABLE_SQLITE_MESSAGES: Final[tuple[str, ...]] = (
    "database is locked",
    "unable to open database file",
    "disk i/o error",
)


def is_unavailable_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached or cannot serve right now."""
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError | OSError | TimeoutError):
        return True
    if _from_asyncpg(exc):
        # The driver's own exception, from code that uses the asyncpg connection directly.
        sqlstate = getattr(exc, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
            return True
        return type(exc).__name__ in {"InterfaceError", "ConnectionDoesNotExistError"}
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
            return True
        cause = getattr(orig, "__cause__", None)
        if isinstance(cause, OSError | TimeoutError):
            return True
        if isinstance(exc, sa_exc.OperationalError) and _from_sqlite(orig):
            message = str(orig).lower()
            return any(m in message for m in _UNAVAILABLE_SQLITE_MESSAGES)
    return False


def _from_asyncpg(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("asyncpg")


def _from_sqlite(orig: BaseException | None) -> bool:
    return orig is not None and type(orig).__module__.startswith("sqlite3")
