"""Strict reading of compact JWS parts: canonical base64url, JSON objects, typed claims.

Every refusal is a :class:`Rejected` carrying its reason;
``keel.security.signed_tokens`` turns it into the one opaque ``InvalidToken``
the caller sees. :func:`check_text` holds the text a token is issued with to
the same bounds :func:`text_claim` reads it with.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "MAX_CLAIM_LENGTH",
    "Rejected",
    "b64url",
    "b64url_decode",
    "check_text",
    "json_object",
    "numeric_date",
    "text_claim",
]

#: The longest ``sub``, ``jti`` or other text claim keel accepts.
MAX_CLAIM_LENGTH: Final = 256


class Rejected(ValueError):
    """Why a token was refused; only ever the ``__cause__`` of an ``InvalidToken``."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """A segment already matched against the base64url alphabet; canonical form only."""
    if len(segment) % 4 == 1:
        raise Rejected("segment length")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if b64url(data) != segment:
        raise Rejected("non-canonical base64url")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise Rejected("duplicate member")  # RFC 7515 §5.2 step 4 allows refusing them
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise Rejected("non-JSON constant")


def json_object(data: bytes) -> dict[str, Any]:
    value = json.loads(
        data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
    )
    if not isinstance(value, dict):
        raise Rejected("not a JSON object")
    return value


def numeric_date(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Rejected(f"{name} is not an integer")
    return value


def text_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_LENGTH:
        raise Rejected(f"{name} is missing or malformed")
    return value


def check_text(name: str, value: str) -> None:
    """``ValueError`` unless ``value`` is text a token may carry (the caller's mistake)."""
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_LENGTH:
        raise ValueError(f"{name} must be a non-empty string of at most {MAX_CLAIM_LENGTH}")
