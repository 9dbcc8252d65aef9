"""The migration history on real SQLite and PostgreSQL: up, down, up again, no drift, no races."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select
from sqlalchemy.pool import NullPool

from keel.db import Database, KeelInstance, build_engine
from keel.db.migrate import alembic_config, current, downgrade, head, schema_diff, upgrade

from ._settings import MakeSettings


def _revisions_oldest_first() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def _previous(revision: str) -> str | None:
    script = ScriptDirectory.from_config(alembic_config())
    down = script.get_revision(revision).down_revision
    assert down is None or isinstance(down, str), "keel's history is linear"
    return down


async def _tables(url: str, make_settings: MakeSettings) -> set[str]:
    engine = build_engine(make_settings(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def test_upgrade_downgrade_upgrade(database_url: str, make_settings: MakeSettings) -> None:
    settings = make_settings(database_url)
    assert current(settings) is None

    upgrade(settings)
    assert current(settings) == head()

    downgrade(settings)
    assert current(settings) == _previous(head())

    upgrade(settings)
    assert current(settings) == head()
    assert schema_diff(settings) == []


def test_every_revision_steps_up_and_down(database_url: str, make_settings: MakeSettings) -> None:
    settings = make_settings(database_url)
    revisions = _revisions_oldest_first()
    assert revisions[-1] == head()
    for revision in revisions:
        upgrade(settings, "+1")
        assert current(settings) == revision
    for revision in reversed(revisions):
        assert current(settings) == revision
        downgrade(settings, "-1")
    assert current(settings) is None
    assert asyncio.run(_tables(database_url, make_settings)) <= {"keel_alembic_version"}


def test_models_match_the_migrated_schema(database_url: str, make_settings: MakeSettings) -> None:
    settings = make_settings(database_url)
    upgrade(settings)
    assert schema_diff(settings) == []


def test_schema_diff_sees_an_unmigrated_database(
    database_url: str, make_settings: MakeSettings
) -> None:
    # The comparison itself must be able to fail, or the test above proves nothing.
    diff = schema_diff(make_settings(database_url))
    assert any(op[0] == "add_table" and op[1].name == "keel_instance" for op in diff)


async def test_migrated_table_round_trips_through_the_orm(
    database_url: str, make_settings: MakeSettings
) -> None:
    settings = make_settings(database_url)
    await asyncio.to_thread(upgrade, settings)
    db = Database(settings)
    try:
        assert await db.current_revision() == head()
        row_id = uuid.uuid4()
        created = datetime(2026, 5, 4, 3, 2, 1, 654321, tzinfo=UTC)
        async with db.unit_of_work() as uow:
            uow.session.add(KeelInstance(id=row_id, created_at=created, schema_note="baseline"))
        async with db.unit_of_work() as uow:
            row = (await uow.session.execute(select(KeelInstance))).scalar_one()
        assert row.id == row_id
        assert row.created_at == created
        assert row.created_at.tzinfo is UTC
    finally:
        await db.dispose()


def test_current_does_not_create_a_sqlite_file(tmp_path: Path, make_settings: MakeSettings) -> None:
    path = tmp_path / "absent.sqlite3"
    assert current(make_settings(f"sqlite:///{path}")) is None
    assert not path.exists()


async def test_sync_api_refuses_a_running_loop(
    sqlite_url: str, make_settings: MakeSettings
) -> None:
    settings = make_settings(sqlite_url)
    with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
        current(settings)
    with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
        upgrade(settings)
    assert await asyncio.to_thread(current, settings) is None


_CONCURRENT_UPGRADE = textwrap.dedent(
    """
    import logging, sys
    import alembic.command, asyncpg, sqlalchemy.dialects.postgresql.asyncpg  # imported up front
    from pydantic import SecretStr
    from keel.db.migrate import head, upgrade
    from keel.settings import DatabaseSettings, normalize_database_url

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    settings = DatabaseSettings(
        url=SecretStr(normalize_database_url(sys.argv[1])), pool_size=1, max_overflow=0,
        pool_timeout=5.0, connect_timeout=5.0, echo=False,
    )
    head()  # loads the revision scripts
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "go":
        raise SystemExit(2)
    upgrade(settings)
    """
)


@pytest.mark.postgres
def test_concurrent_upgrades_run_once(postgres_url: str, make_settings: MakeSettings) -> None:
    command = [sys.executable, "-X", "dev", "-W", "error", "-c", _CONCURRENT_UPGRADE, postgres_url]
    processes = [
        subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for process in processes:  # every process has imported everything and waits
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        for process in processes:  # then all start at once
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=90) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert "Traceback" not in err, err
    ran = sum(err.count("Running upgrade  -> 0001") for _, err in outputs)
    assert ran == 1, [err for _, err in outputs]
    settings = make_settings(postgres_url)
    assert current(settings) == head()
    assert schema_diff(settings) == []
