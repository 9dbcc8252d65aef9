"""The summary's two files, and reading the claims back from the Markdown table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from keel.report import Claim, Outcome, Report, claims_in_markdown, to_markdown, write_report

AT = datetime(2026, 12, 7, 21, 0, 5, tzinfo=UTC)


def _report() -> Report:
    claims = (
        Claim("a.one", "Claim | with a bar", "`keel x`: how", AT, Outcome.PASS, "fine"),
        Claim("b.two", "Second claim", "how", AT, Outcome.FAIL, "broke | badly"),
        Claim("c.three", "Third claim", "how", AT, Outcome.NOT_CHECKED, "no --url"),
    )
    return Report(claims, AT, "production", "http://127.0.0.1:8000")


def test_every_claim_is_a_row_with_its_check_time_and_result() -> None:
    text = to_markdown(_report())
    row = (
        "| Claim \\| with a bar | `a.one`: `keel x`: how | 2026-12-07T21:00:05Z | **pass**: fine |"
    )
    assert row in text
    assert "**fail**: broke \\| badly |" in text
    assert "1 pass, 1 fail, 1 not checked" in text
    assert claims_in_markdown(text) == [
        ("a.one", "Claim | with a bar"),
        ("b.two", "Second claim"),
        ("c.three", "Third claim"),
    ]


def test_both_files_are_written(tmp_path: Path) -> None:
    markdown, document = write_report(_report(), tmp_path / "out")
    assert markdown.read_text(encoding="utf-8") == to_markdown(_report())
    data = json.loads(document.read_text(encoding="utf-8"))
    assert data["totals"] == {"pass": 1, "fail": 1, "not checked": 1}
    assert data["claims"][2] == {
        "id": "c.three",
        "claim": "Third claim",
        "check": "how",
        "checked_at": "2026-12-07T21:00:05Z",
        "result": "not checked",
        "evidence": "no --url",
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "SECURITY_SUMMARY.md",
        "security-summary.json",
    ]
