"""The canonical byte form of an audit row, the input to its HMAC.

Stable and documented, so anyone holding the audit key can re-verify rows
with any JSON library:

- a JSON object with the keys ``v`` (format version, 1), ``seq``, ``key_id``,
  ``prev_hash`` (lower-case hex), ``occurred_at``, ``action``, ``result``,
  ``actor_type``, ``actor_id``, ``target_type``, ``target_id``, ``source_ip``,
  ``user_agent``, ``request_id`` and ``details``; absent values are ``null``;
- keys sorted at every level, no insignificant white space
  (separators ``,`` and ``:``), UTF-8, non-ASCII kept as is;
- timestamps in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always 6 digits);
- integers as JSON integers; floats are not allowed anywhere;
- ``hash = HMAC-SHA256(audit_key[key_id], canonical_bytes)``, lower-case hex.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

__all__ = ["FORMAT_VERSION", "canonical_json", "canonical_row", "format_timestamp"]

FORMAT_VERSION = 1


def format_timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("canonical timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _no_floats(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("floats have no canonical form")
    raise TypeError(f"{type(value).__name__} is not JSON")


def canonical_json(value: Any) -> bytes:
    """Sorted-key, compact, UTF-8 JSON; refuses floats and non-JSON types."""

    def check(item: Any) -> Any:
        if isinstance(item, float):
            raise ValueError("floats have no canonical form")
        if isinstance(item, dict):
            return {str(k): check(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [check(v) for v in item]
        return item

    return json.dumps(
        check(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_no_floats,
    ).encode("utf-8")


def canonical_row(
    *,
    seq: int,
    key_id: str,
    prev_hash: str,
    occurred_at: datetime,
    action: str,
    result: str,
    actor_type: str,
    actor_id: str | None,
    target_type: str | None,
    target_id: str | None,
    source_ip: str | None,
    user_agent: str | None,
    request_id: str | None,
    details: dict[str, Any],
) -> bytes:
    """The bytes the row's HMAC covers."""
    return canonical_json(
        {
            "v": FORMAT_VERSION,
            "seq": seq,
            "key_id": key_id,
            "prev_hash": prev_hash,
            "occurred_at": format_timestamp(occurred_at),
            "action": action,
            "result": result,
            "actor_type": actor_type,
            "actor_id": actor_id,
            "target_type": target_type,
            "target_id": target_id,
            "source_ip": source_ip,
            "user_agent": user_agent,
            "request_id": request_id,
            "details": details,
        }
    )
