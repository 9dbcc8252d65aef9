"""keel's revisions, one file each; Alembic ignores this ``__init__``."""
