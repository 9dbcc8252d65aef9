"""Shared type aliases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeAlias

__all__ = ["JSONObject", "JSONScalar", "JSONValue", "Origin"]

JSONScalar: TypeAlias = str | int | float | bool | None
JSONValue: TypeAlias = JSONScalar | list["JSONValue"] | Mapping[str, "JSONValue"]
JSONObject: TypeAlias = Mapping[str, JSONValue]


class Origin(Protocol):
    """Where a call came from: what the audit trail and the session records keep of it.

    ``keel.api.origin.RequestOrigin`` fits (from the trusted-proxy middleware),
    and so does ``keel.accounts.CallerOrigin`` for the CLI and tests.
    """

    @property
    def source_ip(self) -> str | None: ...

    @property
    def user_agent(self) -> str | None: ...

    @property
    def request_id(self) -> str | None: ...
