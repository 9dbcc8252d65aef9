"""The lazy async engine, the unit of work, and the mapping of connection failures.

``Database(settings)`` connects to nothing: the engine is built on first use
and opens connections only when a unit of work or a ping needs one. Every
failure to reach the database (refused, unreachable, timed out, pool
exhausted, server shutting down, connection killed) surfaces as
``keel.errors.DatabaseUnavailable`` with the driver's exception chained;
everything else (integrity errors, SQL mistakes) is left alone for the caller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

from sqlalchemy import event, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import Pool, QueuePool
from sqlalchemy.util import await_

from keel._logging import event as log_event
from keel.db.revision import LEGACY_VERSION_TABLE, VERSION_TABLE
from keel.errors import ConfigurationError, DatabaseUnavailable
from keel.metrics import record_db_pool_timeout
from keel.settings import DatabaseSettings

__all__ = [
    "Database",
    "UnitOfWork",
    "build_engine",
    "is_unavailable_error",
]

_log = logging.getLogger("keel.db")

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


def _postgres_options(url: URL, connect_timeout: float) -> _PostgresOptions:
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


def _is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return database in {"", ":memory:"} or url.query.get("mode") == "memory"


def _sqlite_pragmas(busy_timeout_ms: int, foreign_keys: bool) -> Any:
    statements = (
        f"PRAGMA busy_timeout = {busy_timeout_ms:d}",
        f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}",
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = NORMAL",
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()

    return on_connect


def build_engine(
    settings: DatabaseSettings,
    *,
    poolclass: type[Pool] | None = None,
    sqlite_foreign_keys: bool = True,
) -> AsyncEngine:
    """Build (not connect) the async engine for ``settings``.

    PostgreSQL goes through asyncpg with a bounded pool, checkouts pinged with
    one round trip (``_ping_on_checkout``), and the connect timeout; SQLite
    through aiosqlite with foreign keys, WAL and a busy timeout set on every
    connection. ``poolclass`` (e.g. ``NullPool`` for
    one-off migration runs) replaces the bounded pool. ``sqlite_foreign_keys``
    is turned off only by migrations, which rebuild tables in batch mode.
    """
    url = make_url(settings.url.get_secret_value())
    # A statement's parameters (addresses, token digests, user input) never reach a log or
    # an exception's text: not with echo on, not in the line of an error that escapes.
    kwargs: dict[str, Any] = {"echo": settings.echo, "hide_parameters": True}
    if poolclass is not None:
        kwargs["poolclass"] = poolclass
    bounded = poolclass is None

    if settings.dialect == "postgresql":
        options = _postgres_options(url, settings.connect_timeout)
        connect_args = dict(options.connect_args)
        ssl_arg = options.ssl.connect_arg()
        if ssl_arg is not None:
            connect_args["ssl"] = ssl_arg
        if bounded:
            kwargs.update(
                pool_size=settings.pool_size,
                max_overflow=settings.max_overflow,
                pool_timeout=settings.pool_timeout,
            )
        engine = create_async_engine(options.url, connect_args=connect_args, **kwargs)
        event.listen(engine.sync_engine.pool, "checkout", _ping_on_checkout)
        event.listen(engine.sync_engine.pool, "checkin", _stamp_checkin)
        return engine

    if bounded and not _is_memory_sqlite(url):
        kwargs.update(
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
        )
    kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, connect_args={"timeout": settings.connect_timeout}, **kwargs)
    busy_ms = max(1, int(settings.connect_timeout * 1000))
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas(busy_ms, sqlite_foreign_keys))
    return engine


# A connection back in the pool for less than this long was proven alive by its last
# use and is handed out without a ping (HikariCP's "alive bypass window" does the same).
PING_BYPASS_SECONDS: Final = 0.5
_CHECKED_IN: Final = "keel_checked_in"


def _ping_on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Ping a pooled PostgreSQL connection as it is checked out: one round trip at most.

    SQLAlchemy's own pre-ping for asyncpg wraps its ping in BEGIN ... ROLLBACK
    (for PgBouncer's transaction mode, which asyncpg's prepared statements do
    not suit anyway): three round trips before every unit of work. Here the
    empty statement runs outside any transaction, and not at all for a
    connection checked in less than ``PING_BYPASS_SECONDS`` ago. A connection
    that fails it raises ``DisconnectionError``, which the pool answers by
    discarding it and connecting afresh (SQLAlchemy's documented custom
    pessimistic ping).
    """
    checked_in = record.info.pop(_CHECKED_IN, None)
    if checked_in is not None and time.monotonic() - checked_in < PING_BYPASS_SECONDS:
        return
    try:
        await_(dbapi_connection.driver_connection.fetchrow(";"))
    except Exception as exc:
        raise sa_exc.DisconnectionError("the pooled connection failed its ping") from exc


def _stamp_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info[_CHECKED_IN] = time.monotonic()


def check_url(settings: DatabaseSettings) -> None:
    """Raise ``ConfigurationError`` if the URL's options cannot work. Pure: reads nothing."""
    url = make_url(settings.url.get_secret_value())
    if settings.dialect == "postgresql":
        _postgres_options(url, settings.connect_timeout)


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


class UnitOfWork:
    """One transaction's worth of work: a session, committed or rolled back as a whole.

    Obtained only from ``Database.unit_of_work()``; repositories take it and use
    ``session``. Do not commit or close the session yourself.
    """

    __slots__ = ("_session",)

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    @property
    def session(self) -> AsyncSession:
        return self._session

    async def flush(self) -> None:
        """Send pending changes now (to see generated values or constraint errors early)."""
        await self._session.flush()

    async def driver(self) -> Any | None:
        """The asyncpg connection under this unit, its transaction begun; ``None`` on SQLite.

        For hot paths that skip SQLAlchemy's per-statement work: what is sent
        on it is part of this unit's transaction and commits or rolls back
        with it. The transaction is begun here, not lazily at the first
        statement, through the asyncpg adapter's own (private) way to begin;
        ``None`` too if that ever goes missing, so callers keep a SQLAlchemy path.
        """
        conn = await self._session.connection()
        if conn.dialect.name != "postgresql":
            return None
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if driver is not None and not driver.is_in_transaction():
            begin = getattr(raw.dbapi_connection, "_start_transaction", None)
            if begin is not None:
                await begin()
        if driver is None or not driver.is_in_transaction():
            return None
        return driver


class Database:
    """The database of one process: a lazily built engine and units of work.

    Constructing it validates the URL's options and connects to nothing; the
    engine is created on first use. Create one per process (never share it
    across ``fork``) and ``dispose()`` it at shutdown.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        check_url(settings)
        self._settings = settings
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    @property
    def settings(self) -> DatabaseSettings:
        return self._settings

    @property
    def dialect(self) -> Literal["postgresql", "sqlite"]:
        return self._settings.dialect

    @property
    def engine(self) -> AsyncEngine:
        """The async engine, built (not connected) on first access."""
        if self._engine is None:
            try:
                self._engine = build_engine(self._settings)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigurationError(
                    f"cannot build the database engine from DATABASE_URL: {type(exc).__name__}"
                ) from exc
            self._sessions = async_sessionmaker(
                self._engine, expire_on_commit=False, autoflush=True
            )
        return self._engine

    def pool_status(self) -> tuple[int, int] | None:
        """Connections checked out and open beyond the pool size; None before the engine."""
        pool = self._engine.sync_engine.pool if self._engine is not None else None
        if not isinstance(pool, QueuePool):
            return None
        return pool.checkedout(), max(0, pool.overflow())

    def _sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        self.engine  # noqa: B018  (builds the engine and the session factory)
        assert self._sessions is not None
        return self._sessions

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """A unit of work: committed on clean exit, rolled back on any exception, always closed.

        Connects lazily (a unit of work that runs no statement never checks out
        a connection). A failure to reach the database, inside the block or at
        commit, is raised as ``DatabaseUnavailable`` with the cause chained.
        """
        session = self._sessionmaker()()
        try:
            yield UnitOfWork(session)
            await session.commit()
        except BaseException as exc:
            await self._rollback(session)
            if isinstance(exc, Exception) and is_unavailable_error(exc):
                self._log_unavailable("unit_of_work", exc)
                raise DatabaseUnavailable("the database is unavailable") from exc
            raise
        finally:
            await session.close()

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Any]:
        """A pooled PostgreSQL connection's asyncpg driver, outside any transaction.

        Each statement sent on it commits on its own. A failure to reach the
        database is raised as ``DatabaseUnavailable``, as in ``unit_of_work``.
        """
        if self.dialect != "postgresql":
            raise ConfigurationError("autocommit connections are for PostgreSQL only")
        try:
            async with self.engine.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                assert driver is not None
                yield driver
        except Exception as exc:
            if is_unavailable_error(exc):
                self._log_unavailable("autocommit", exc)
                raise DatabaseUnavailable("the database is unavailable") from exc
            raise

    async def ping(self, timeout: float) -> None:  # noqa: ASYNC109  (a bound, applied below)
        """Check out a connection and run ``SELECT 1`` within ``timeout`` seconds.

        Raises ``DatabaseUnavailable`` (cause chained) when the database does not
        answer in time or at all, however the connect fails.
        """
        try:
            async with asyncio.timeout(timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except TimeoutError as exc:
            self._log_unavailable("ping", exc)
            raise DatabaseUnavailable("the database did not answer in time") from exc
        except Exception as exc:
            # Whatever stops SELECT 1 (refused, auth, TLS, pool, configuration) means "not ready".
            self._log_unavailable("ping", exc)
            raise DatabaseUnavailable("the database is unavailable") from exc

    async def current_revision(self) -> str | None:
        """The one Alembic revision the database is at; ``None`` when it was never migrated.

        ``ConfigurationError`` when it holds several heads (an application's
        branch beside keel's): use :meth:`current_revisions` then.
        """
        revisions = await self.current_revisions()
        if len(revisions) > 1:
            raise ConfigurationError(
                f"the database has several migration heads ({', '.join(sorted(revisions))})"
            )
        return next(iter(revisions), None)

    async def current_revisions(self) -> frozenset[str]:
        """Every revision in the version table (keel's and an application's heads)."""
        try:
            async with self.engine.connect() as conn:
                return await conn.run_sync(_read_revisions)
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            if is_unavailable_error(exc):
                self._log_unavailable("current_revision", exc)
                raise DatabaseUnavailable("the database is unavailable") from exc
            raise

    async def dispose(self) -> None:
        """Close every pooled connection. The engine rebuilds its pool if used again."""
        if self._engine is not None:
            await self._engine.dispose()

    async def _rollback(self, session: AsyncSession) -> None:
        try:
            await session.rollback()
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            log_event(_log, logging.WARNING, "db_rollback_failed", error=type(exc).__name__)

    def _log_unavailable(self, operation: str, exc: BaseException) -> None:
        if isinstance(exc, sa_exc.TimeoutError):  # every pooled connection stayed busy
            record_db_pool_timeout()
        log_event(
            _log,
            logging.WARNING,
            "db_unavailable",
            operation=operation,
            dialect=self._settings.dialect,
            host=self._settings.host,
            error=type(exc).__name__,
        )


def _read_revisions(conn: Connection) -> frozenset[str]:
    table = next(
        (t for t in (VERSION_TABLE, LEGACY_VERSION_TABLE) if inspect(conn).has_table(t)), None
    )
    if table is None:
        return frozenset()
    rows = conn.execute(text(f"SELECT version_num FROM {table}")).scalars().all()  # noqa: S608 - a constant
    return frozenset(str(row) for row in rows)
