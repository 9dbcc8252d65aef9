from __future__ import annotations

from keel.db import migrate
from keel.db.revision import HEAD_REVISION


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    assert migrate.head() == HEAD_REVISION
