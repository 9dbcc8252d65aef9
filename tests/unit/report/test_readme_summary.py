"""The README's sample summary states exactly the claims the command checks, in its order."""

from __future__ import annotations

from pathlib import Path

from keel._clock import FrozenClock
from keel.db import Database
from keel.db.revision import expected_heads
from keel.report import checks, claims_in_markdown
from keel.settings import Settings

README = Path(__file__).resolve().parents[3] / "README.md"


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_the_readme_sample_has_the_commands_claims() -> None:
    settings = Settings()
    listed = [
        (check.id, check.claim)
        for check in checks(settings, Database(settings.database), FrozenClock(), None)
    ]
    sample = claims_in_markdown(_section(README.read_text(encoding="utf-8"), "## Security summary"))
    assert sample == listed


def test_every_check_id_is_unique() -> None:
    settings = Settings()
    ids = [c.id for c in checks(settings, Database(settings.database), FrozenClock(), None)]
    assert len(ids) == len(set(ids)) == 18


def test_the_readme_sample_names_the_migration_head_this_code_ships() -> None:
    # The sample was generated against a database at every head; a new revision makes it stale.
    section = _section(README.read_text(encoding="utf-8"), "## Security summary")
    heads = ",".join(sorted(expected_heads()))
    assert f"**pass**: at {heads}: every head reached" in section
