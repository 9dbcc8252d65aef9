"""Where a call into the accounts side came from: the ``Origin`` protocol and a plain value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

__all__ = ["NO_ORIGIN", "CallerOrigin", "Origin"]


class Origin(Protocol):
    """Where a call came from (``keel.api.origin.RequestOrigin`` fits)."""

    @property
    def source_ip(self) -> str | None: ...

    @property
    def user_agent(self) -> str | None: ...

    @property
    def request_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CallerOrigin:
    """An ``Origin`` for calls that are not HTTP requests (the CLI, tests)."""

    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


NO_ORIGIN: Final = CallerOrigin()
