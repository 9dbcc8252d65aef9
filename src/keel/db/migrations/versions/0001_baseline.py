"""baseline: keel_instance

Revision ID: 0001
Revises:
Create Date: 2026-01-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("keel",)  # keel's own branch
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "keel_instance",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_keel_instance")),
    )


def downgrade() -> None:
    op.drop_table("keel_instance")
