"""keel.db: the lazy async engine, the unit of work, the declarative base, migrations.

Importing this package or constructing ``Database`` connects to nothing.
Migrations live in ``keel.db.migrate`` (imported separately: it pulls in Alembic).
"""

from keel.db.base import NAMING_CONVENTION, Base
from keel.db.engine import Database, UnitOfWork, build_engine, is_unavailable_error
from keel.db.models import KeelInstance
from keel.db.types import UTCDateTime

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "Database",
    "KeelInstance",
    "UTCDateTime",
    "UnitOfWork",
    "build_engine",
    "is_unavailable_error",
]
