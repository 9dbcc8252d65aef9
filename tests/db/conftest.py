"""Fixtures for the tests of ``keel.db`` against real databases: test-sized settings and an
unmigrated ``Database`` on ``database_url`` (a SQLite file, then PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from keel.db import Database
from keel.settings import DatabaseSettings, normalize_database_url

MakeSettings = Callable[..., DatabaseSettings]


def _make_settings(url: str, **overrides: Any) -> DatabaseSettings:
    values: dict[str, Any] = {
        "pool_size": 2,
        "max_overflow": 1,
        "pool_timeout": 2.0,
        "connect_timeout": 2.0,
        "echo": False,
    }
    values.update(overrides)
    return DatabaseSettings(url=SecretStr(normalize_database_url(url)), **values)


@pytest.fixture
def make_settings() -> MakeSettings:
    """Build ``DatabaseSettings`` for a plain URL, with small test-sized pools."""
    return _make_settings


@pytest.fixture
async def empty_database(database_url: str, make_settings: MakeSettings) -> AsyncIterator[Database]:
    """A ``Database`` on ``database_url`` (``tests/conftest.py``), not migrated, disposed
    afterwards."""
    db = Database(make_settings(database_url))
    try:
        yield db
    finally:
        await db.dispose()
