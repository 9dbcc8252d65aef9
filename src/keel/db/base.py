"""The declarative ``Base`` every keel table derives from."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import MetaData, Uuid
from sqlalchemy.orm import DeclarativeBase

from keel.db.types import UTCDateTime

__all__ = ["NAMING_CONVENTION", "Base"]

# Deterministic constraint names, so migrations can drop and alter them by name
# on every backend (SQLite batch mode needs names to recreate tables).
NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base: named constraints, aware-UTC ``datetime``, portable ``UUID``.

    A ``Mapped[datetime]`` column is a ``UTCDateTime`` and a ``Mapped[uuid.UUID]``
    column a ``sqlalchemy.Uuid`` (native on PostgreSQL, ``CHAR(32)`` on SQLite)
    unless the column says otherwise.
    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {  # noqa: RUF012  (SQLAlchemy reads it as a class attribute)
        datetime: UTCDateTime(),
        uuid.UUID: Uuid(),
    }
