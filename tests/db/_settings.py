"""Test-sized ``DatabaseSettings`` for a plain URL (small pools, short timeouts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from keel.settings import DatabaseSettings, normalize_database_url

MakeSettings = Callable[..., DatabaseSettings]


def make_database_settings(url: str, **overrides: Any) -> DatabaseSettings:
    values: dict[str, Any] = {
        "pool_size": 2,
        "max_overflow": 1,
        "pool_timeout": 2.0,
        "connect_timeout": 2.0,
        "echo": False,
    }
    values.update(overrides)
    return DatabaseSettings(url=SecretStr(normalize_database_url(url)), **values)
