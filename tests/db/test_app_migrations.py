"""An application's own revisions beside keel's: one upgrade runs both, the heads are computed.

On real SQLite and PostgreSQL: an application package of revisions (written
into a temporary directory on ``sys.path``) whose first revision depends on
keel's head and creates a table with a foreign key to ``users``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.pool import NullPool

from keel.api.app import create_app
from keel.db import build_engine
from keel.db.migrate import current_heads, downgrade, head, heads, upgrade
from keel.db.revision import HEAD_REVISION, expected_heads, schema_is_current
from keel.errors import ConfigurationError
from keel.settings import Settings

from ._settings import MakeSettings

FIRST = '''
"""notes: the notes table"""
import sqlalchemy as sa
from alembic import op

revision = "notes_0001"
down_revision = None
branch_labels = ("notes",)
depends_on = "{keel_head}"


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("owner_id", sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE")),
        sa.Column("body", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notes")
'''

SECOND = '''
"""notes: a title"""
import sqlalchemy as sa
from alembic import op

revision = "notes_0002"
down_revision = "notes_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notes") as batch:
        batch.add_column(sa.Column("title", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notes") as batch:
        batch.drop_column("title")
'''


@pytest.fixture
def notes_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    app = f"notes_app_{secrets.token_hex(4)}"  # a name of its own: sys.modules remembers packages
    package = tmp_path / "site" / app / "migrations"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "notes_0001.py").write_text(textwrap.dedent(FIRST.format(keel_head=head())))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return f"{app}.migrations"


def _add_second(package: str) -> None:
    from keel.db.revision import package_directory

    (package_directory(package) / "notes_0002.py").write_text(textwrap.dedent(SECOND))


async def _table_names(settings_url: str, make_settings: MakeSettings) -> set[str]:
    engine = build_engine(make_settings(settings_url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def test_one_upgrade_runs_keels_revisions_and_the_applications(
    database_url: str, make_settings: MakeSettings, notes_package: str
) -> None:
    settings = make_settings(database_url, migration_packages=(notes_package,))
    assert heads(settings) == expected_heads((notes_package,)) == {HEAD_REVISION, "notes_0001"}

    assert not schema_is_current(frozenset(), (notes_package,))

    upgrade(settings)

    # Alembic records notes_0001 alone: it depends on keel's head, so it implies it.
    assert current_heads(settings) == {"notes_0001"}
    assert schema_is_current(current_heads(settings), (notes_package,))
    assert {"users", "notes", "keel_alembic_version"} <= asyncio.run(
        _table_names(database_url, make_settings)
    )
    _add_second(notes_package)  # the application ships another revision
    assert expected_heads((notes_package,)) == {HEAD_REVISION, "notes_0002"}
    assert not schema_is_current(current_heads(settings), (notes_package,))
    upgrade(settings)
    assert current_heads(settings) == {"notes_0002"}
    assert schema_is_current(current_heads(settings), (notes_package,))
    downgrade(settings, "notes@-1")  # one branch steps down alone
    assert current_heads(settings) == {"notes_0001"}


def test_an_existing_keel_only_database_gains_the_applications_tables(
    database_url: str, make_settings: MakeSettings, notes_package: str
) -> None:
    upgrade(make_settings(database_url))  # deployed before the application had revisions
    assert current_heads(make_settings(database_url)) == {HEAD_REVISION}
    assert schema_is_current(frozenset({HEAD_REVISION}))
    assert not schema_is_current(frozenset({HEAD_REVISION}), (notes_package,))

    upgrade(make_settings(database_url, migration_packages=(notes_package,)))

    assert current_heads(make_settings(database_url)) == {"notes_0001"}
    assert "notes" in asyncio.run(_table_names(database_url, make_settings))


async def _rename_version_table(url: str, make_settings: MakeSettings) -> None:
    engine = build_engine(make_settings(url), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            # What Alembic's default version table looks like, holding keel's revision.
            await conn.execute(
                text(
                    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
                )
            )
            await conn.execute(
                text("INSERT INTO alembic_version SELECT version_num FROM keel_alembic_version")
            )
            await conn.execute(text("DROP TABLE keel_alembic_version"))
    finally:
        await engine.dispose()


def test_a_database_from_before_the_named_version_table_is_adopted(
    database_url: str, make_settings: MakeSettings, notes_package: str
) -> None:
    upgrade(make_settings(database_url))
    asyncio.run(
        _rename_version_table(database_url, make_settings)
    )  # as keel 0006 and older left it
    assert current_heads(make_settings(database_url)) == {HEAD_REVISION}  # still read

    upgrade(make_settings(database_url, migration_packages=(notes_package,)))

    tables = asyncio.run(_table_names(database_url, make_settings))
    assert "alembic_version" not in tables
    assert current_heads(make_settings(database_url)) == {"notes_0001"}


def test_a_database_migrated_by_newer_code_is_not_current(notes_package: str) -> None:
    assert not schema_is_current(frozenset({"0099"}))
    assert not schema_is_current(frozenset({"notes_0001", "notes_0009"}), (notes_package,))


def test_a_missing_migrations_package_is_a_configuration_error(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    with pytest.raises(ConfigurationError, match="cannot be found"):
        heads(make_settings(sqlite_url, migration_packages=("no_such_app.migrations",)))


async def _schema_event(settings: Settings, caplog: pytest.LogCaptureFixture) -> str:
    app = create_app(settings)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="keel.app"):
        async with app.router.lifespan_context(app):
            await app.state.keel.supervisor.wait_warmups()
    (found,) = [r for r in caplog.records if r.getMessage().startswith("schema_")]
    return found.getMessage()


async def test_the_app_checks_the_schema_against_its_applications_heads_too(
    sqlite_url: str, notes_package: str, caplog: pytest.LogCaptureFixture
) -> None:
    keel_only = Settings(database_url=sqlite_url, redis_url=None)
    with_notes = Settings(database_url=sqlite_url, redis_url=None, migrations=notes_package)
    await asyncio.to_thread(upgrade, keel_only.database)
    assert await _schema_event(keel_only, caplog) == "schema_current"
    assert await _schema_event(with_notes, caplog) == "schema_outdated"
    await asyncio.to_thread(upgrade, with_notes.database)
    assert await _schema_event(with_notes, caplog) == "schema_current"
