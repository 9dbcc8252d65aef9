"""Helpers for the audit tests: settings, a test keyring, events, and a superuser's tampering."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy import insert, text
from sqlalchemy.sql.expression import Executable

from keel.audit import (
    Action,
    ActorType,
    AuditEvent,
    AuditKeyring,
    ChainLink,
    Result,
    record_many,
)
from keel.audit.canonical import canonical_json, canonical_row
from keel.audit.models import events_table
from keel.db import Database
from keel.settings import DatabaseSettings, normalize_database_url

KEY_ID = "k1"
KEY = b"test-audit-key-0123456789abcdef-k1"
KEYRING = AuditKeyring(current_id=KEY_ID, keys={KEY_ID: KEY})
T0 = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)

SQLITE_TRIGGERS = (
    "audit_events_head",
    "audit_events_no_update",
    "audit_events_no_delete",
    "audit_checkpoints_no_update",
    "audit_checkpoints_no_delete",
    "audit_chain_head_keep",
)


def make_settings(url: str, **overrides: Any) -> DatabaseSettings:
    values: dict[str, Any] = {
        "pool_size": 5,
        "max_overflow": 5,
        "pool_timeout": 30.0,
        "connect_timeout": 30.0,  # also SQLite's busy timeout: many writers queue for the lock
        "echo": False,
    }
    values.update(overrides)
    return DatabaseSettings(url=SecretStr(normalize_database_url(url)), **values)


def event(n: int, **overrides: Any) -> AuditEvent:
    """A plausible event, distinct per ``n``."""
    values: dict[str, Any] = {
        "action": Action.USER_UPDATED,
        "result": Result.SUCCESS,
        "occurred_at": T0 + timedelta(seconds=n, microseconds=n),
        "actor_type": ActorType.USER,
        "actor_id": f"user-{n % 7}",
        "target_type": "user",
        "target_id": f"target-{n}",
        "source_ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (keel tests)",
        "request_id": f"req-{n}",
        "details": {"n": n, "field": "display_name"},
    }
    values.update(overrides)
    return AuditEvent(**values)


async def fill(database: Database, count: int, *, first: int = 1) -> list[ChainLink]:
    """Append ``count`` events in one transaction."""
    async with database.unit_of_work() as uow:
        return await record_many(uow, [event(first + i) for i in range(count)], KEYRING)


async def rows(database: Database) -> list[dict[str, Any]]:
    """Every stored event row, by seq."""
    async with database.engine.connect() as conn:
        result = await conn.execute(text("SELECT * FROM audit_events ORDER BY seq"))
        return [dict(row._mapping) for row in result]


async def head(database: Database) -> ChainLink:
    async with database.engine.connect() as conn:
        row = (await conn.execute(text("SELECT seq, hash FROM audit_chain_head"))).one()
    return ChainLink(int(row[0]), str(row[1]))


async def as_superuser(database: Database, *statements: str | Executable, **params: Any) -> None:
    """Run ``statements`` with the append-only triggers out of the way.

    What an attacker with the database owner's (or the file's) rights can do:
    PostgreSQL ``ALTER TABLE ... DISABLE TRIGGER ALL``, SQLite ``DROP TRIGGER``.
    """
    async with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            for table in ("audit_events", "audit_checkpoints", "audit_chain_head"):
                await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER ALL"))
        else:
            for name in SQLITE_TRIGGERS:
                await conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        for statement in statements:
            await conn.execute(text(statement) if isinstance(statement, str) else statement, params)
        if database.dialect == "postgresql":
            for table in ("audit_events", "audit_checkpoints", "audit_chain_head"):
                await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER ALL"))


def sealed_row(
    seq: int, prev_hash: str, n: int, *, keyring: AuditKeyring = KEYRING, key_id: str | None = None
) -> dict[str, Any]:
    """A row as ``record`` would store it (sealed with ``key_id``), for forging tests."""
    source = event(n)
    key_id = key_id or keyring.current_id
    canonical = canonical_row(
        seq=seq,
        key_id=key_id,
        prev_hash=prev_hash,
        occurred_at=source.occurred_at,
        action=source.action,
        result=source.result,
        actor_type=source.actor_type,
        actor_id=source.actor_id,
        target_type=source.target_type,
        target_id=source.target_id,
        source_ip=source.source_ip,
        user_agent=source.user_agent,
        request_id=source.request_id,
        details=source.details,
    )
    return {
        "seq": seq,
        "occurred_at": source.occurred_at,
        "action": str(source.action),
        "result": source.result.value,
        "actor_type": source.actor_type.value,
        "actor_id": source.actor_id,
        "target_type": source.target_type,
        "target_id": source.target_id,
        "source_ip": source.source_ip,
        "user_agent": source.user_agent,
        "request_id": source.request_id,
        "details": canonical_json(source.details).decode(),
        "key_id": key_id,
        "prev_hash": prev_hash,
        "hash": keyring.seal(canonical, key_id),
    }


# Through the typed table, so the timestamp is stored exactly as keel stores it.
INSERT_ROW = insert(events_table)


def rehash_lines(lines: Sequence[str], keyring: AuditKeyring = KEYRING) -> list[bool]:
    """Whether each exported/archived JSON line re-seals to its own hash (what a SIEM can do)."""
    results = []
    for line in lines:
        item = json.loads(line)
        canonical = canonical_row(
            seq=item["seq"],
            key_id=item["key_id"],
            prev_hash=item["prev_hash"],
            occurred_at=datetime.fromisoformat(item["occurred_at"].replace("Z", "+00:00")),
            action=item["action"],
            result=item["result"],
            actor_type=item["actor_type"],
            actor_id=item["actor_id"],
            target_type=item["target_type"],
            target_id=item["target_id"],
            source_ip=item["source_ip"],
            user_agent=item["user_agent"],
            request_id=item["request_id"],
            details=item["details"],
        )
        results.append(keyring.seal(canonical, item["key_id"]) == item["hash"])
    return results
