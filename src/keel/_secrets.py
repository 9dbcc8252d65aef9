"""What makes a configured secret unfit: one list and one test for every secret keel reads.

``keel check`` (``SECRET_KEY``, E003/W003) and the HS256 signing key (``KEEL_JWT_SECRET``,
SEC-34) both ask :func:`weakness`; each adds its own length rule, because one counts
characters of a text value and the other bytes of key material.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Final

__all__ = ["PLACEHOLDER_MARKERS", "WELL_KNOWN_SECRETS", "entropy_bits_per_char", "weakness"]

#: Values from tutorials, READMEs and jwt.io: a secret equal to one of them (or one of
#: them repeated to reach the minimum length) is public knowledge.
WELL_KNOWN_SECRETS: Final = frozenset(
    {
        "secret",
        "secretkey",
        "secret-key",
        "secret_key",
        "mysecret",
        "supersecret",
        "super-secret",
        "your-256-bit-secret",
        "your-secret-key",
        "your_secret_key",
        "jwt-secret",
        "jwt_secret",
        "jwtsecret",
        "changeme",
        "password",
        "keyboard cat",
        "default",
        "test",
        "keel",
    }
)

#: Words that mark an example value wherever they appear in it.
PLACEHOLDER_MARKERS: Final = (
    "changeme",
    "change-me",
    "change_me",
    "replace-me",
    "replace_me",
    "secret",
    "password",
    "example",
    "placeholder",
    "insecure",
    "default",
    "xxxx",
    "todo",
)

#: Below this Shannon entropy per character a value is typed, not generated.
MIN_ENTROPY_BITS_PER_CHAR: Final = 3.0


def entropy_bits_per_char(value: str) -> float:
    """Shannon entropy of ``value``'s characters, in bits per character."""
    if not value:
        return 0.0
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def weakness(secret: str) -> str | None:
    """Why ``secret`` is public or guessable, or ``None``; length is the caller's rule."""
    lowered = secret.strip().lower()
    for known in WELL_KNOWN_SECRETS:
        repeats, remainder = divmod(len(lowered), len(known))
        if repeats and remainder == 0 and lowered == known * repeats:
            return "is a well-known value"
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        return "looks like a placeholder"
    if entropy_bits_per_char(secret) < MIN_ENTROPY_BITS_PER_CHAR:
        return "has too little randomness"
    return None
