"""The environment keel reads: its own ``KEEL_*`` variables and the platform's few."""

from __future__ import annotations

import os
from typing import Final

import pytest

#: The platform variables keel reads besides its own (Heroku, Render, a container's runtime).
PLATFORM_VARIABLES: Final = frozenset(
    {"DATABASE_URL", "REDIS_URL", "PORT", "WEB_CONCURRENCY", "SECRET_KEY"}
)


def clear_keel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every variable keel reads (names compared case-insensitively, as settings are)."""
    for name in list(os.environ):
        if name.upper().startswith("KEEL_") or name.upper() in PLATFORM_VARIABLES:
            monkeypatch.delenv(name)
