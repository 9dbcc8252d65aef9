"""keel's own tables (the baseline). Later features add theirs in their own packages."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Text
from sqlalchemy.orm import Mapped, mapped_column

from keel.db.base import Base

__all__ = ["KeelInstance"]


class KeelInstance(Base):
    """One row per keel installation; created by revision ``0001``."""

    __tablename__ = "keel_instance"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime]
    schema_note: Mapped[str] = mapped_column(Text)
