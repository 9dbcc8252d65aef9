"""In-process API tests: a fresh app per test, driven through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from keel.settings import Settings


@pytest.fixture
def settings_factory(sqlite_url: str) -> Callable[..., Settings]:
    """Settings for a test: a private SQLite file, no Redis, plus ``overrides``."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": sqlite_url, "redis_url": None}
        values.update(overrides)
        return Settings(**values)

    return make
