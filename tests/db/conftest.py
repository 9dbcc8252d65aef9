"""Fixtures for the tests that run against real databases (SQLite files and PostgreSQL)."""

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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of this test's own: a SQLite file, then real PostgreSQL."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def database(db_url: str, make_settings: MakeSettings) -> AsyncIterator[Database]:
    """A ``Database`` on ``db_url``, disposed afterwards."""
    db = Database(make_settings(db_url))
    try:
        yield db
    finally:
        await db.dispose()
