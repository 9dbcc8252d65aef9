"""users.security_version: a counter that every change of a user's row moves on

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:00:00+00:00

Caches of a user's security state (``keel.auth.SubjectRecord``) are written
at this version, and a cache never lets an older version replace a newer one.
A trigger moves it on with every ``UPDATE`` of the row, whoever runs it (the
ORM, a bulk statement, an operator at a SQL prompt), so no code path can
change a user without the caches being able to tell.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_FUNCTION = """
CREATE FUNCTION users_security_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.security_version := OLD.security_version + 1;
    RETURN NEW;
END
$$
"""
_PG_TRIGGER = (
    "CREATE TRIGGER users_security_version BEFORE UPDATE ON users "
    "FOR EACH ROW EXECUTE FUNCTION users_security_version()"
)
# SQLite has no BEFORE-UPDATE assignment to NEW: an AFTER trigger moves the row on once
# (the WHEN clause keeps it from firing again for its own update).
_SQLITE_TRIGGER = """
CREATE TRIGGER users_security_version AFTER UPDATE ON users
FOR EACH ROW WHEN NEW.security_version = OLD.security_version
BEGIN
    UPDATE users SET security_version = OLD.security_version + 1 WHERE id = NEW.id;
END
"""


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("security_version", sa.BigInteger(), nullable=False, server_default="0")
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER users_security_version ON users")
        op.execute("DROP FUNCTION users_security_version()")
    else:
        op.execute("DROP TRIGGER users_security_version")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("security_version")
