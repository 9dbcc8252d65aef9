"""Display names: NFKC, trimmed, 1 to 100 printable characters.

Refused: control characters (CR/LF would forge lines wherever a name is
shown), unassigned and private-use code points, surrogates, and the bidi
embedding, override and isolate controls (a name must not reorder the text
around it, CVE-2021-42574's "Trojan Source" trick). Zero-width joiners stay:
emoji sequences need them.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from keel.accounts.errors import InvalidDisplayName
from keel.accounts.models import DISPLAY_NAME_MAX

__all__ = ["normalise_display_name"]

_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
_BIDI_CONTROLS: Final = frozenset(
    {*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)), "\u061c"}
)


def normalise_display_name(raw: str) -> str:
    """The stored form of ``raw``; raises :class:`InvalidDisplayName`."""
    if len(raw) > 4 * DISPLAY_NAME_MAX:
        raise InvalidDisplayName()
    name = unicodedata.normalize("NFKC", raw).strip()
    if not 0 < len(name) <= DISPLAY_NAME_MAX:
        raise InvalidDisplayName()
    for char in name:
        if char in _BIDI_CONTROLS or unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise InvalidDisplayName()
    return name
