"""Fixtures for the tests of ``keel.db`` against real databases: test-sized settings and an
unmigrated ``Database`` on ``database_url`` (a SQLite file, then PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel.db import Database

from ._settings import MakeSettings, make_database_settings


@pytest.fixture
def make_settings() -> MakeSettings:
    """Build ``DatabaseSettings`` for a plain URL, with small test-sized pools."""
    return make_database_settings


@pytest.fixture
async def empty_database(database_url: str, make_settings: MakeSettings) -> AsyncIterator[Database]:
    """A ``Database`` on ``database_url`` (``tests/conftest.py``), not migrated, disposed
    afterwards."""
    db = Database(make_settings(database_url))
    try:
        yield db
    finally:
        await db.dispose()
