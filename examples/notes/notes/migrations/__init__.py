"""The notes service's Alembic revisions (``KEEL_MIGRATIONS=notes.migrations``)."""
