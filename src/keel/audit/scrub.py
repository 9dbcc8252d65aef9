"""Remove secrets from audit details before anything is stored (SEC-65).

Two nets: a key whose name looks secret loses its value whatever it holds,
and a value that looks like a credential (a JWT, a PHC hash, a long random
token, a bearer header) is replaced whatever its key is called. Ids, hashes
prefixes and last-4s are what callers should put in details instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = ["REDACTED", "scrub", "scrub_text"]

REDACTED: Final = "[redacted]"
MAX_DEPTH: Final = 6
MAX_STRING: Final = 512

_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|authorization|cookie|credential|private"
    r"|otp|totp|mfa[_-]?code|recovery|seed|signature|salt|hash|pin\b|cvv|ssn",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"""
    eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.?[A-Za-z0-9_-]*       # a JWT / JWS (base64url of "{")
    | \$(argon2(id|i|d)|2[aby]?|scrypt|pbkdf2[-\w]*)\$      # a PHC / crypt hash
    | (?i:bearer|basic)\s+\S+                              # an Authorization value
    | -----BEGIN[ A-Z]*PRIVATE\ KEY-----
    """,
    re.VERBOSE,
)
# A long unbroken run of token alphabet with digits and letters mixed: a raw secret.
_RANDOM_RUN = re.compile(
    r"(?=[A-Za-z0-9_\-+/=]*\d)(?=[A-Za-z0-9_\-+/=]*[A-Za-z])[A-Za-z0-9_\-+/=]{32,}"
)


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _redact_run(match: re.Match[str]) -> str:
    return match.group(0) if _UUID.fullmatch(match.group(0)) else REDACTED


def scrub_text(value: str) -> str:
    """``value`` with anything that looks like a credential replaced, truncated to a bound."""
    if _SECRET_VALUE.search(value):
        return REDACTED
    cleaned = _RANDOM_RUN.sub(_redact_run, value)
    return cleaned[:MAX_STRING]


def scrub(value: object, _depth: int = 0) -> object:
    """A copy of JSON-like ``value`` without secret keys' values or secret-looking strings."""
    if _depth > MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            str(key): REDACTED if _SECRET_KEY.search(str(key)) else scrub(item, _depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item, _depth + 1) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value
