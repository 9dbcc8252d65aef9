"""Query parameter types bounded by what the database can hold.

A value the column cannot hold must be refused here, as a 422 problem like
any other parameter that does not validate, never reach the database and come
back as a 500: integers beyond a ``BIGINT`` (``seq``), times that overflow
when converted to UTC (``0001-01-01T00:00:00+01:00``), and NUL bytes, which
PostgreSQL text cannot store (SQLite would, so both refuse them alike).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Query
from pydantic import AfterValidator, AwareDatetime, BeforeValidator

from keel.api.contract import LIMIT_KEY

__all__ = ["INT64_MAX", "UtcTime", "bigint_query", "text_query"]

#: The largest value of a signed 64-bit column (``BIGINT``).
INT64_MAX: Final = 2**63 - 1
_NO_NUL: Final = r"^[^\x00]*$"
# RFC 3339 §5.6 date-time, what the schema's ``format: date-time`` promises: pydantic alone
# would also take a Unix time ("0.5") or a time without seconds.
_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("the time must be an RFC 3339 date-time with its offset")
    return value


def _in_utc_range(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


#: An RFC 3339 time, converted to UTC (422 when the conversion leaves years 1..9999).
UtcTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc_range)]


def bigint_query() -> Any:
    """A non-negative integer query parameter that fits a ``BIGINT`` column."""
    return Query(ge=0, le=INT64_MAX)


def text_query(max_length: int, *, limit: str | None = None) -> Any:
    """A text query parameter of at most ``max_length`` characters, without NUL.

    ``limit`` names what the application allows beyond that (``keel.api.contract``).
    """
    extra = {LIMIT_KEY: limit} if limit else None
    return Query(max_length=max_length, pattern=_NO_NUL, json_schema_extra=extra)
