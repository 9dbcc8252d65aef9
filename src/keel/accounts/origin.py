"""Where a call into the accounts side came from: the ``Origin`` protocol and a plain value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from keel._types import Origin

__all__ = ["NO_ORIGIN", "CallerOrigin", "Origin"]


@dataclass(frozen=True, slots=True)
class CallerOrigin:
    """An ``Origin`` for calls that are not HTTP requests (the CLI, tests)."""

    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


NO_ORIGIN: Final = CallerOrigin()
