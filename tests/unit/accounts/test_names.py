"""keel.accounts.names: display names are printable, bounded and cannot reorder text."""

from __future__ import annotations

import pytest

from keel.accounts.errors import InvalidDisplayName
from keel.accounts.names import normalise_display_name


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("Alice", "Alice"),
        ("  Alice Smith  ", "Alice Smith"),
        ("\uff26\uff55\uff4c\uff4c", "Full"),  # fullwidth letters
        ("Zoë 👩\u200d💻", "Zoë 👩\u200d💻"),  # the joiner of an emoji sequence stays
        ("x" * 100, "x" * 100),
    ],
)
def test_accepted(raw: str, stored: str) -> None:
    assert normalise_display_name(raw) == stored


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "x" * 101,
        "a\nb",
        "a\rb",
        "a\x00b",
        "a\u202eb",
        "a\u2066b",
        "a\ue000b",
        "a\u2028b",
    ],
)
def test_refused(raw: str) -> None:
    with pytest.raises(InvalidDisplayName):
        normalise_display_name(raw)
