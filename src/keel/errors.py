"""keel's error tree. Domain code raises these; only ``keel.api.errors`` turns them into HTTP.

::

    KeelError
    ├── ConfigurationError          settings that cannot work (``keel check`` explains)
    ├── ClientError                 the caller sent something wrong
    │   ├── InvalidInput            well-formed but unacceptable input
    │   ├── NotFound                no such thing (or not yours to see)
    │   ├── Conflict                the change clashes with current state
    │   ├── Unauthenticated         no valid credentials (one opaque answer)
    │   ├── Forbidden               authenticated, but not allowed
    │   └── TooManyRequests         a rate limit or lockout delay: retry later
    └── DependencyUnavailable       a backing service did not answer in time
        ├── DatabaseUnavailable
        └── CacheUnavailable
            └── CacheFull           the cache holds its maximum of keys: a new key is refused

Every error carries a stable machine-readable ``code``; messages are for humans
and never contain submitted values or secrets.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CacheFull",
    "CacheUnavailable",
    "ClientError",
    "ConfigurationError",
    "Conflict",
    "DatabaseUnavailable",
    "DependencyUnavailable",
    "Forbidden",
    "InvalidInput",
    "KeelError",
    "NotFound",
    "TooManyRequests",
    "Unauthenticated",
]


class KeelError(Exception):
    """Base of every error keel raises on purpose."""

    code: ClassVar[str] = "keel_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if code is not None:
            self.code = code  # type: ignore[misc]  # instance override of the class default

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigurationError(KeelError):
    """The configuration cannot work."""

    code = "configuration_error"


class ClientError(KeelError):
    """The request cannot be served as sent."""

    code = "bad_request"


class InvalidInput(ClientError):
    """The input is well-formed but not acceptable."""

    code = "invalid_input"


class NotFound(ClientError):
    """No such resource."""

    code = "not_found"


class Conflict(ClientError):
    """The change conflicts with the current state."""

    code = "conflict"


class Unauthenticated(ClientError):
    """Authentication required."""

    code = "unauthenticated"


class Forbidden(ClientError):
    """Not allowed."""

    code = "forbidden"


class TooManyRequests(ClientError):
    """Too many attempts: try again later."""

    code = "rate_limited"

    def __init__(self, retry_after: float, *, limit: str = "rate", message: str = "") -> None:
        super().__init__(message)
        #: Whole seconds the caller should wait (``Retry-After``), at least 1.
        self.retry_after = max(1, int(-(-retry_after // 1)))
        #: Which limit refused the attempt (``account``, ``account_ip``, ``ip``, ``global``...).
        self.limit = limit


class DependencyUnavailable(KeelError):
    """A backing service is unavailable."""

    code = "dependency_unavailable"


class DatabaseUnavailable(DependencyUnavailable):
    """The database is unavailable."""

    code = "database_unavailable"


class CacheUnavailable(DependencyUnavailable):
    """The cache is unavailable."""

    code = "cache_unavailable"


class CacheFull(CacheUnavailable):
    """The cache holds its maximum number of keys and refuses a new one.

    Nothing is evicted to make room: writes to existing keys and deletes still
    work. Callers treat it as an unavailable cache and fail closed.
    """

    code = "cache_full"
