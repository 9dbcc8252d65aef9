"""Query parameter types bounded by what the database can hold.

A value the column cannot hold must be refused here, as a 422 problem like
any other parameter that does not validate, never reach the database and come
back as a 500: integers beyond a ``BIGINT`` (``seq``), times that overflow
when converted to UTC (``0001-01-01T00:00:00+01:00``), and NUL bytes, which
PostgreSQL text cannot store (SQLite would, so both refuse them alike).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Query
from pydantic import AfterValidator, AwareDatetime

__all__ = ["INT64_MAX", "UtcTime", "bigint_query", "text_query"]

#: The largest value of a signed 64-bit column (``BIGINT``).
INT64_MAX: Final = 2**63 - 1
_NO_NUL: Final = r"^[^\x00]*$"


def _in_utc_range(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


#: An aware time, converted to UTC (422 when the conversion leaves years 1..9999).
UtcTime = Annotated[AwareDatetime, AfterValidator(_in_utc_range)]


def bigint_query() -> Any:
    """A non-negative integer query parameter that fits a ``BIGINT`` column."""
    return Query(ge=0, le=INT64_MAX)


def text_query(max_length: int) -> Any:
    """A text query parameter of at most ``max_length`` characters, without NUL."""
    return Query(max_length=max_length, pattern=_NO_NUL)
