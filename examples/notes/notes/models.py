"""The notes table: one row per note, owned by one of keel's users."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from keel.db import Base

__all__ = ["BODY_MAX", "TITLE_MAX", "Note"]

TITLE_MAX = 200
BODY_MAX = 10_000


class Note(Base):
    """A note; deleted with its owner (``ON DELETE CASCADE``)."""

    __tablename__ = "notes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
