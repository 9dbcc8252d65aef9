"""keel's Alembic environment and revisions; run them through ``keel.db.migrate``."""

__all__: list[str] = []
