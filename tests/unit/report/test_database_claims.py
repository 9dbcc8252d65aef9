"""The claims read from the database, on SQLite and on PostgreSQL: the audit chain,
the migration state, and the signing key's age and rotation (the key file plus its
``key_promoted`` audit event)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from keel._clock import FrozenClock
from keel.audit import Action, ActorType, AuditEvent, Result, keyring_from_settings, record
from keel.db import Database
from keel.db.migrate import upgrade
from keel.db.revision import expected_heads
from keel.report.claim import Outcome
from keel.report.database import audit_chain_verifies, schema_is_migrated
from keel.report.signing_keys import rotation_is_not_stalled, signing_key_is_young
from keel.security.key_file import generate_key_file, read_key_file, write_key_file
from keel.security.key_rotation import stage
from keel.settings import Settings
from tests.audit._support import as_superuser

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
AUDIT_KEY = "report-tests-audit-key-0123456789abcdef"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing-keys.json"
    generate_key_file(path)
    return path


@pytest.fixture
def settings(database_url: str, key_file: Path) -> Settings:
    return Settings(
        database_url=SecretStr(database_url),
        audit_key=SecretStr(AUDIT_KEY),
        jwt_key_file=str(key_file),
    )


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    db = Database(settings.database)
    try:
        yield db
    finally:
        await db.dispose()


async def _migrate(settings: Settings) -> None:
    await asyncio.to_thread(upgrade, settings.database)


async def _record(database: Database, settings: Settings, event: AuditEvent) -> None:
    async with database.unit_of_work() as uow:
        await record(uow, event, keyring_from_settings(settings.audit))


def _promoted(kid: str, at: datetime) -> AuditEvent:
    return AuditEvent(
        action=Action.KEY_PROMOTED,
        result=Result.SUCCESS,
        occurred_at=at,
        actor_type=ActorType.SYSTEM,
        actor_id="cli:test",
        target_type="signing_key",
        target_id=kid,
    )


async def test_sec_68_the_audit_claim_passes_on_a_sound_chain_and_fails_at_a_tampered_row(
    settings: Settings, database: Database
) -> None:
    await _migrate(settings)
    for n in range(3):
        await _record(database, settings, _promoted(f"kid-{n}", T0 + timedelta(seconds=n)))
    sound = await audit_chain_verifies(settings, database)
    await as_superuser(database, "UPDATE audit_events SET actor_id = 'cli:mallory' WHERE seq = 2")
    tampered = await audit_chain_verifies(settings, database)
    assert sound.outcome is Outcome.PASS
    assert sound.evidence.startswith("OK 3 events, head 3:")
    assert tampered.outcome is Outcome.FAIL
    assert tampered.evidence.startswith("BROKEN at seq 2: hash mismatch")


async def test_the_migration_claim_fails_before_upgrade_and_passes_after(
    settings: Settings, database: Database
) -> None:
    before = await schema_is_migrated(settings, database)
    await _migrate(settings)
    await database.dispose()
    after = await schema_is_migrated(settings, database)
    heads = ",".join(sorted(expected_heads(())))
    assert before.outcome is Outcome.FAIL
    assert before.evidence == f"at (empty), heads are {heads}: run `keel db upgrade`"
    assert (after.outcome, after.evidence) == (Outcome.PASS, f"at {heads}: every head reached")


async def test_the_key_age_comes_from_the_promotion_in_the_audit_trail(
    settings: Settings, database: Database, key_file: Path
) -> None:
    await _migrate(settings)
    kid = read_key_file(key_file)[0].current.kid
    unknown = await signing_key_is_young(settings, database, FrozenClock(T0))
    await _record(database, settings, _promoted(kid, T0))
    young = await signing_key_is_young(settings, database, FrozenClock(T0 + timedelta(days=89)))
    old = await signing_key_is_young(settings, database, FrozenClock(T0 + timedelta(days=91)))
    assert unknown.outcome is Outcome.NOT_CHECKED
    assert f"no promotion of the current key {kid} is recorded" in unknown.evidence
    assert young.outcome is Outcome.PASS
    assert f"current key {kid} signs since 2026-06-01T12:00:00Z" in young.evidence
    assert old.outcome is Outcome.FAIL
    assert "91.0 days old, over 90 days" in old.evidence


async def test_a_key_file_unchanged_for_longer_than_the_age_fails_without_a_promotion(
    settings: Settings, database: Database, key_file: Path
) -> None:
    await _migrate(settings)
    long_ago = (datetime.now(UTC) - timedelta(days=120)).timestamp()
    os.utime(key_file, (long_ago, long_ago))
    now = FrozenClock(datetime.now(UTC))
    verdict = await signing_key_is_young(settings, database, now)
    assert verdict.outcome is Outcome.FAIL
    assert "has not changed for 120.0 days: the key is at least that old" in verdict.evidence


async def test_a_staged_key_left_unpromoted_fails_the_rotation_claim(
    settings: Settings, key_file: Path
) -> None:
    keys = read_key_file(key_file)[0]
    write_key_file(key_file, stage(keys, int(T0.timestamp()), keep_for=960).keys)
    settled = await rotation_is_not_stalled(settings, FrozenClock(T0 + timedelta(hours=1)))
    stalled = await rotation_is_not_stalled(settings, FrozenClock(T0 + timedelta(days=2)))
    assert settled.outcome is Outcome.PASS
    assert "staged at 2026-06-01T12:00:00Z, awaiting promotion" in settled.evidence
    assert stalled.outcome is Outcome.FAIL
    assert "never promoted (over 1 day): run `keel keys promote`" in stalled.evidence


async def test_keys_from_the_environment_are_not_checked(database_url: str) -> None:
    settings = Settings(
        database_url=SecretStr(database_url),
        jwt_algorithm="HS256",
        jwt_secret=SecretStr("k" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz"),
    )
    verdict = await rotation_is_not_stalled(settings, FrozenClock(T0))
    assert verdict.outcome is Outcome.NOT_CHECKED
    assert "comes from KEEL_JWT_SECRET, which records no dates" in verdict.evidence
