"""A PostgreSQL ``DATABASE_URL``'s query parameters, turned into asyncpg's connect arguments.

libpq's names (``sslmode``, ``sslrootcert``, ``connect_timeout``, ...) are what
platforms hand out; asyncpg understands only some of them. Each is translated,
passed through, or refused with a ``ConfigurationError`` naming it, so a bad URL
fails once at start instead of at every connect.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

from sqlalchemy.engine import URL

from keel.errors import ConfigurationError

__all__ = ["SSLMode", "postgres_options"]

SSLMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

_SSLMODES: Final[frozenset[str]] = frozenset(
    {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
)
# ``?ssl=`` as some platforms and SQLAlchemy's docs write it.
_SSL_BOOLEANS: Final[Mapping[str, str]] = {
    "true": "require",
    "1": "require",
    "on": "require",
    "yes": "require",
    "false": "disable",
    "0": "disable",
    "off": "disable",
    "no": "disable",
}
# libpq parameters asyncpg does not take as keywords: translated, then removed.
_TRANSLATED: Final[frozenset[str]] = frozenset(
    {
        "sslmode",
        "ssl",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcrl",
        "sslnegotiation",
        "connect_timeout",
        "application_name",
        "channel_binding",
    }
)
# Passed through to SQLAlchemy's asyncpg dialect / asyncpg.connect as they are.
_PASSTHROUGH_INT: Final[frozenset[str]] = frozenset(
    {
        "prepared_statement_cache_size",
        "statement_cache_size",
        "max_cached_statement_lifetime",
        "max_cacheable_statement_size",
    }
)
_PASSTHROUGH: Final[frozenset[str]] = frozenset(
    {"host", "port", "user", "password", "passfile", "target_session_attrs"}
)


# SQLSTATE classes that mean "the database cannot serve us", not "your SQL is wrong".
@dataclass(frozen=True, slots=True)
class _SslSpec:
    """What the URL asked for, turned into asyncpg's ``ssl=`` when the engine is built."""

    mode: SSLMode | None = None
    rootcert: str | None = None
    cert: str | None = None
    key: str | None = None
    password: str | None = None
    crl: str | None = None

    def connect_arg(self) -> str | bool | ssl.SSLContext | None:
        """asyncpg's ``ssl=``: a mode name, ``False``, or a context; ``None`` for its default."""
        if self.mode is None:
            return None
        if self.mode == "disable":
            return False
        custom = self.rootcert is not None or self.cert is not None or self.crl is not None
        if self.mode in {"allow", "prefer"} or (self.mode == "require" and not custom):
            # asyncpg implements these exactly as libpq does (including ~/.postgresql/root.crt).
            return self.mode
        return self._context()

    def _context(self) -> ssl.SSLContext:
        verify = self.mode in {"verify-ca", "verify-full"} or self.rootcert is not None
        if verify:
            cafile = self._root_file()
            ctx = ssl.create_default_context(cafile=cafile)  # system store when cafile is None
            ctx.check_hostname = self.mode == "verify-full"
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            # sslmode=require without a root certificate: encrypted, not authenticated (libpq).
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.crl is not None:
            ctx.load_verify_locations(cafile=self.crl)
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
        if self.cert is not None:
            ctx.load_cert_chain(self.cert, self.key, self.password)
        return ctx

    def _root_file(self) -> str | None:
        if self.rootcert == "system":
            return None
        if self.rootcert is not None:
            return self.rootcert
        default = Path(os.path.expanduser("~/.postgresql/root.crt"))
        return str(default) if default.is_file() else None


@dataclass(frozen=True, slots=True)
class _PostgresOptions:
    url: URL
    ssl: _SslSpec
    connect_args: dict[str, Any] = field(default_factory=dict)


def postgres_options(url: URL, connect_timeout: float) -> _PostgresOptions:
    """Split a platform URL into what SQLAlchemy's asyncpg dialect accepts and ``connect_args``.

    libpq's ``sslmode`` and friends become asyncpg's ``ssl=``; ``connect_timeout``
    is replaced by the configured one (always bounded); ``application_name``
    goes into ``server_settings``. Anything asyncpg cannot honour raises
    ``ConfigurationError`` naming the parameter, instead of failing at every connect.
    """
    query: dict[str, str] = {}
    for key, value in url.query.items():
        if not isinstance(value, str):
            raise ConfigurationError(f"DATABASE_URL repeats the query parameter {key!r}")
        query[key] = value
    unknown = sorted(set(query) - _TRANSLATED - _PASSTHROUGH - _PASSTHROUGH_INT)
    if unknown:
        raise ConfigurationError(
            f"DATABASE_URL has query parameters asyncpg cannot use: {', '.join(unknown)}"
        )

    mode = query.get("sslmode")
    if mode is None and "ssl" in query:
        raw = query["ssl"].lower()
        mode = _SSL_BOOLEANS.get(raw, raw)
    if mode is not None:
        mode = mode.lower()
        if mode not in _SSLMODES:
            raise ConfigurationError(
                f"DATABASE_URL sslmode must be one of {', '.join(sorted(_SSLMODES))}"
            )
    if query.get("channel_binding", "").lower() == "require":
        raise ConfigurationError("DATABASE_URL channel_binding=require is not supported by asyncpg")
    spec = _SslSpec(
        mode=cast(SSLMode | None, mode),  # checked against _SSLMODES above
        rootcert=query.get("sslrootcert"),
        cert=query.get("sslcert"),
        key=query.get("sslkey"),
        password=query.get("sslpassword"),
        crl=query.get("sslcrl"),
    )

    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        "server_settings": {
            "application_name": query.get("application_name", "keel"),
            "timezone": "UTC",
        },
    }
    negotiation = query.get("sslnegotiation")
    if negotiation is not None:
        if negotiation not in {"postgres", "direct"}:
            raise ConfigurationError("DATABASE_URL sslnegotiation must be postgres or direct")
        connect_args["direct_tls"] = negotiation == "direct"
    for key in _PASSTHROUGH_INT & set(query):
        try:
            int(query[key])
        except ValueError:
            raise ConfigurationError(f"DATABASE_URL {key} must be an integer") from None

    kept = {k: v for k, v in query.items() if k in _PASSTHROUGH or k in _PASSTHROUGH_INT}
    # statement_cache_size etc. are asyncpg.connect keywords and must be ints.
    for key in _PASSTHROUGH_INT - {"prepared_statement_cache_size"}:
        if key in kept:
            connect_args[key] = int(kept.pop(key))
    return _PostgresOptions(url=url.set(query=kept), ssl=spec, connect_args=connect_args)
