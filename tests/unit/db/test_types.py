"""``UTCDateTime`` and the declarative base, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.schema import CreateTable

from keel.db import NAMING_CONVENTION, Base, KeelInstance, UTCDateTime

PG = PGDialect()  # type: ignore[no-untyped-call]
SQLITE = SQLiteDialect()


def test_bind_converts_aware_values_to_utc() -> None:
    value = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    bound = UTCDateTime().process_bind_param(value, PG)
    assert bound == datetime(2025, 12, 31, 22, 0, tzinfo=UTC)
    assert bound is not None
    assert bound.tzinfo is UTC


def test_bind_refuses_naive_values() -> None:
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 1), SQLITE)  # noqa: DTZ001


def test_bind_refuses_non_datetimes() -> None:
    with pytest.raises(TypeError):
        UTCDateTime().process_bind_param("2026-01-01", PG)  # type: ignore[arg-type]


def test_none_passes_both_ways() -> None:
    assert UTCDateTime().process_bind_param(None, PG) is None
    assert UTCDateTime().process_result_value(None, PG) is None


def test_result_reattaches_utc_to_naive_sqlite_values() -> None:
    loaded = UTCDateTime().process_result_value(datetime(2026, 1, 1, 12), SQLITE)  # noqa: DTZ001
    assert loaded == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert loaded is not None
    assert loaded.tzinfo is UTC


def test_result_normalises_other_zones_to_utc() -> None:
    value = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    loaded = UTCDateTime().process_result_value(value, PG)
    assert loaded == value
    assert loaded is not None
    assert loaded.tzinfo is UTC


def test_column_types_per_dialect() -> None:
    table: Any = KeelInstance.__table__
    pg = str(CreateTable(table).compile(dialect=PG))
    assert "id UUID NOT NULL" in pg
    assert "created_at TIMESTAMP WITH TIME ZONE NOT NULL" in pg
    assert "CONSTRAINT pk_keel_instance PRIMARY KEY (id)" in pg
    lite = str(CreateTable(table).compile(dialect=SQLITE))
    assert "id CHAR(32) NOT NULL" in lite


def test_metadata_names_constraints() -> None:
    assert Base.metadata.naming_convention == NAMING_CONVENTION
    table: Any = KeelInstance.__table__
    assert table.primary_key.name == "pk_keel_instance"
