"""The packaged Alembic setup: no config file, a linear history, self-contained revisions."""

from __future__ import annotations

import ast
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, Table

from keel.db import UTCDateTime
from keel.db.migrate import MIGRATIONS_DIR, alembic_config, head, render_item
from keel.errors import ConfigurationError

VERSIONS = MIGRATIONS_DIR / "versions"


def test_config_reads_no_file_and_points_into_the_package() -> None:
    config = alembic_config()
    assert config.config_file_name is None
    assert config.toml_file_name is None
    location = Path(config.get_main_option("script_location") or "")
    assert location == MIGRATIONS_DIR
    assert location.is_relative_to(Path(__file__).resolve().parents[3] / "src" / "keel")
    assert (location / "env.py").is_file()
    assert (location / "script.py.mako").is_file()


def test_head_is_the_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [head()]
    assert len(script.get_bases()) == 1
    assert head() == max(rev.revision for rev in script.walk_revisions())


def test_baseline_is_0001() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    baseline = script.get_revision("0001")
    assert baseline is not None
    assert baseline.down_revision is None


def test_revision_files_are_numbered_linear_and_self_contained() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    revisions = list(reversed(list(script.walk_revisions())))
    previous: str | None = None
    for number, revision in enumerate(revisions, start=1):
        assert revision.revision == f"{number:04d}"
        assert revision.down_revision == previous
        assert revision.path is not None
        path = Path(revision.path)
        assert path.name.startswith(f"{revision.revision}_")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        # A revision is frozen history: it must not import keel's (changing) runtime code.
        assert not any(name.startswith("keel") for name in imported), path.name
        previous = revision.revision


def test_env_refuses_to_run_without_keel_settings() -> None:
    with pytest.raises(ConfigurationError, match="keel db upgrade"):
        command.upgrade(alembic_config(), "head")


def test_render_item_writes_plain_timestamptz() -> None:
    assert render_item("type", UTCDateTime(), None) == "sa.DateTime(timezone=True)"
    column: Column[datetime] = Column("x", UTCDateTime())
    Table("t", MetaData(), column)
    assert render_item("column", column, None) is False
