from __future__ import annotations

from keel.db import migrate
from keel.db.revision import HEAD_REVISION, expected_heads


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    assert migrate.head() == HEAD_REVISION


def test_the_heads_read_from_the_files_are_alembics() -> None:
    assert expected_heads() == migrate.heads() == {HEAD_REVISION}
