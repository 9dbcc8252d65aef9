"""The canonical byte form of an audit row, the input to its HMAC.

Stable and documented, so anyone holding the audit key can re-verify rows
with any JSON library:

- a JSON object with the keys ``v`` (format version, 1), ``seq``, ``key_id``,
  ``prev_hash`` (lower-case hex), ``occurred_at``, ``action``, ``result``,
  ``actor_type``, ``actor_id``, ``target_type``, ``target_id``, ``source_ip``,
  ``user_agent``, ``request_id`` and ``details``; absent values are ``null``;
- keys sorted at every level, no insignificant white space
  (separators ``,`` and ``:``), UTF-8, non-ASCII kept as is (only ``"``,
  ``\\`` and control characters are escaped, exactly as Python's ``json``
  module does with ``ensure_ascii=False``);
- timestamps in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (4-digit year, always
  6 fractional digits);
- integers as JSON integers; floats are not allowed anywhere;
- ``hash = HMAC-SHA256(audit_key[key_id], canonical_bytes)``, lower-case hex.

The ``details`` object is stored as its canonical JSON text, so re-hashing a
stored row splices that text in unchanged (``canonical_row_text``): any byte
changed in storage changes the hash. ``tests/unit/audit/test_canonical.py``
pins a golden vector and checks the fast assembly against ``canonical_json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, Final

__all__ = [
    "FORMAT_VERSION",
    "canonical_json",
    "canonical_row",
    "canonical_row_text",
    "format_timestamp",
]

FORMAT_VERSION: Final = 1


def format_timestamp(moment: datetime) -> str:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; refuses naive datetimes."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("canonical timestamps must be timezone-aware")
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def _no_floats(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _check(item: Any) -> Any:
    if isinstance(item, float):
        raise ValueError("floats have no canonical form")
    if isinstance(item, Mapping):
        return {str(k): _check(v) for k, v in item.items()}
    if isinstance(item, list | tuple):
        return [_check(v) for v in item]
    return item


def canonical_json(value: Any) -> bytes:
    """Sorted-key, compact, UTF-8 JSON; refuses floats and non-JSON types."""
    return json.dumps(
        _check(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_no_floats,
    ).encode("utf-8")


def canonical_row_text(
    seq: int,
    key_id: str,
    prev_hash: str,
    occurred_at: str,
    action: str,
    result: str,
    actor_type: str,
    actor_id: str | None,
    target_type: str | None,
    target_id: str | None,
    source_ip: str | None,
    user_agent: str | None,
    request_id: str | None,
    details_json: str,
) -> bytes:
    """The canonical bytes from stored values: ``occurred_at`` already formatted,
    ``details_json`` the canonical JSON text of the details object.

    Byte-for-byte what ``canonical_json`` makes of the same row (keys in sorted
    order, written out by hand because verification runs it for every row).
    """
    if type(seq) is not int:
        raise TypeError("seq must be an int")
    enc = encode_basestring  # C; what json.dumps uses for str with ensure_ascii=False
    return (
        f'{{"action":{enc(action)},'
        f'"actor_id":{"null" if actor_id is None else enc(actor_id)},'
        f'"actor_type":{enc(actor_type)},"details":{details_json},'
        f'"key_id":{enc(key_id)},"occurred_at":{enc(occurred_at)},'
        f'"prev_hash":{enc(prev_hash)},'
        f'"request_id":{"null" if request_id is None else enc(request_id)},'
        f'"result":{enc(result)},"seq":{seq},'
        f'"source_ip":{"null" if source_ip is None else enc(source_ip)},'
        f'"target_id":{"null" if target_id is None else enc(target_id)},'
        f'"target_type":{"null" if target_type is None else enc(target_type)},'
        f'"user_agent":{"null" if user_agent is None else enc(user_agent)},"v":1}}'
    ).encode()


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
    details: Mapping[str, Any],
) -> bytes:
    """The bytes the row's HMAC covers."""
    return canonical_row_text(
        seq,
        key_id,
        prev_hash,
        format_timestamp(occurred_at),
        str(action),
        str(result),
        str(actor_type),
        actor_id,
        target_type,
        target_id,
        source_ip,
        user_agent,
        request_id,
        canonical_json(details).decode("utf-8"),
    )
