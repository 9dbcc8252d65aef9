"""Alembic migrations, packaged with keel and run once per deploy (``keel db upgrade``).

There is no ``alembic.ini``: the Alembic ``Config`` is built here, pointing at
the environment and revisions inside this package (so it works from an
installed wheel), with the database settings handed over in memory. keel never
reads or executes a user-supplied Alembic configuration. An application's
revisions join through ``KEEL_MIGRATIONS`` (see ``keel.db.revision``): their
directories are added to the version locations, and ``upgrade`` goes to every
head of the combined graph.

The functions are synchronous and run their own event loop; from async code
call them through ``asyncio.to_thread``. On PostgreSQL the run holds an
advisory lock, so deploys that start together migrate one after the other and
the second finds nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import os
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from keel.db.engine import Database, build_engine, is_unavailable_error
from keel.db.revision import VERSION_TABLE, version_directories
from keel.db.types import UTCDateTime
from keel.errors import ConfigurationError, DatabaseUnavailable
from keel.settings import DatabaseSettings

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection

__all__ = [
    "ADVISORY_LOCK_KEY",
    "MIGRATIONS_DIR",
    "alembic_config",
    "current",
    "current_heads",
    "downgrade",
    "head",
    "heads",
    "schema_diff",
    "upgrade",
]

MIGRATIONS_DIR: Final = Path(__file__).resolve().with_name("migrations")
# pg_advisory_xact_lock key shared by every keel migration run ("keel.mig" as a bigint).
ADVISORY_LOCK_KEY: Final = int.from_bytes(b"keel.mig", "big")
SETTINGS_ATTRIBUTE: Final = "keel.database_settings"
METADATA_ATTRIBUTE: Final = "keel.target_metadata"
# Every module that declares tables on ``Base.metadata``, imported by name before a
# comparison so that the migrations are always compared with all of keel's models
# (by name because the models of higher layers may not be imported from keel.db).
MODEL_MODULES: Final = (
    "keel.db.models",
    "keel.audit.models",
    "keel.accounts.models",
    "keel.auth.models",
)

_T = TypeVar("_T")


def alembic_config(
    settings: DatabaseSettings | None = None, *, metadata: MetaData | None = None
) -> Config:
    """An Alembic ``Config`` for keel's packaged migrations; no file is read."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    packages = settings.migration_packages if settings is not None else ()
    locations = os.pathsep.join(str(path) for path in version_directories(packages))
    config.set_main_option("version_locations", locations.replace("%", "%%"))
    if settings is not None:
        config.attributes[SETTINGS_ATTRIBUTE] = settings
    if metadata is not None:
        config.attributes[METADATA_ATTRIBUTE] = metadata
    return config


@contextlib.contextmanager
def _reachable(settings: DatabaseSettings) -> Iterator[None]:
    """Turn "cannot reach the database" into ``DatabaseUnavailable`` (one line, no traceback)."""
    try:
        yield
    except Exception as exc:
        if is_unavailable_error(exc):
            raise DatabaseUnavailable(
                f"cannot reach the database at {settings.redacted_url()}"
            ) from exc
        raise


def upgrade(settings: DatabaseSettings, revision: str = "heads") -> None:
    """Migrate the database up to ``revision`` (default: every head, keel's and the app's)."""
    from alembic import command

    _refuse_running_loop()
    with _reachable(settings):
        command.upgrade(alembic_config(settings), revision)


def downgrade(settings: DatabaseSettings, revision: str = "-1") -> None:
    """Migrate the database down to ``revision`` (default: one step)."""
    from alembic import command

    _refuse_running_loop()
    with _reachable(settings):
        command.downgrade(alembic_config(settings), revision)


def current(settings: DatabaseSettings) -> str | None:
    """The revision the database is at; ``None`` when it was never migrated."""
    _refuse_running_loop()
    if _sqlite_file_missing(settings):
        return None  # asking must not create the database file
    with _reachable(settings):
        return _run(_current, settings)


def current_heads(settings: DatabaseSettings) -> frozenset[str]:
    """Every revision the database's version table holds (empty when never migrated)."""
    _refuse_running_loop()
    if _sqlite_file_missing(settings):
        return frozenset()
    with _reachable(settings):
        return _run(_current_heads, settings)


def heads(settings: DatabaseSettings | None = None) -> frozenset[str]:
    """The heads ``upgrade`` migrates to: keel's and those of ``KEEL_MIGRATIONS``' packages."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config(settings)).get_heads())


@functools.cache
def head() -> str:
    """keel's own newest packaged revision."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    revision = script.get_current_head()
    if revision is None:
        raise ConfigurationError("keel's package holds no migrations")
    return revision


def schema_diff(settings: DatabaseSettings, metadata: MetaData | None = None) -> list[Any]:
    """Alembic autogenerate's differences between ``metadata`` and the live schema.

    ``metadata`` defaults to ``keel.db.Base.metadata`` with every module in
    ``MODEL_MODULES`` imported. An empty list means the migrations build exactly
    what the models say.
    """
    from keel.db.base import Base

    if metadata is None:
        for name in MODEL_MODULES:
            importlib.import_module(name)
        metadata = Base.metadata
    return _run(_schema_diff, settings, metadata)


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Autogenerate hook: write ``UTCDateTime`` columns as plain ``sa.DateTime(timezone=True)``.

    Revisions stay self-contained (no import of keel's runtime types).
    """
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _refuse_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        "keel.db.migrate runs its own event loop; from async code use asyncio.to_thread"
    )


def _sqlite_file_missing(settings: DatabaseSettings) -> bool:
    if settings.dialect != "sqlite":
        return False
    from sqlalchemy.engine import make_url

    path = make_url(settings.url.get_secret_value()).database or ""
    if path in {"", ":memory:"} or path.startswith("file:"):
        return False
    return not Path(path).exists()


def _run(fn: Callable[..., Coroutine[Any, Any, _T]], *args: Any) -> _T:
    _refuse_running_loop()
    return asyncio.run(fn(*args))


async def _current(settings: DatabaseSettings) -> str | None:
    database = Database(settings)
    try:
        return await database.current_revision()
    finally:
        await database.dispose()


async def _current_heads(settings: DatabaseSettings) -> frozenset[str]:
    database = Database(settings)
    try:
        return await database.current_revisions()
    finally:
        await database.dispose()


async def _schema_diff(settings: DatabaseSettings, metadata: MetaData) -> list[Any]:
    from sqlalchemy.pool import NullPool

    engine = build_engine(settings, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_compare, metadata)
    finally:
        await engine.dispose()


def _compare(conn: Connection, metadata: MetaData) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
    )
    return list(compare_metadata(context, metadata))
