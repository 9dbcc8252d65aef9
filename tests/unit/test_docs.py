"""The repository's own documents stay true: the SEC index matches the tests' names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_security_index_lists_the_tests_named_after_each_sec_id() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sec_index.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_document_the_readme_names_exists() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("docs/security-index.md", "docs/architecture.md", "examples/notes/"):
        assert name in readme, name
        assert (ROOT / name).exists(), name
    assert (ROOT / "examples" / "notes" / "README.md").exists()
