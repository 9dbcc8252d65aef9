"""Database claims: the audit chain verifies, and the schema is at every migration head."""

from __future__ import annotations

import asyncio

from keel.audit import keyring_from_settings, verify
from keel.db import Database
from keel.db.revision import expected_heads, schema_is_current
from keel.report.claim import Verdict, failed, passed
from keel.settings import Settings

__all__ = ["audit_chain_verifies", "schema_is_migrated"]


async def audit_chain_verifies(settings: Settings, database: Database) -> Verdict:
    """``keel audit verify``'s own walk (:func:`keel.audit.verify`), from the latest checkpoint."""
    result = await verify(database, keyring_from_settings(settings.audit))
    sealed = " (sealed with the development key)" if settings.audit.is_development_key else ""
    if not result.ok:
        return failed(f"{result}{sealed}")
    return passed(f"{result}{sealed}")


def _names(revisions: frozenset[str]) -> str:
    return ",".join(sorted(revisions)) or "(empty)"


async def schema_is_migrated(settings: Settings, database: Database) -> Verdict:
    packages = settings.database.migration_packages
    current = await database.current_revisions()
    if await asyncio.to_thread(schema_is_current, current, packages):
        return passed(f"at {_names(current)}: every head reached")
    heads = await asyncio.to_thread(expected_heads, packages)
    return failed(f"at {_names(current)}, heads are {_names(heads)}: run `keel db upgrade`")
