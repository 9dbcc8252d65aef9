"""The canonical form: stable, documented, sorted, UTC, no floats (the HMAC's input)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.audit.canonical import (
    FORMAT_VERSION,
    canonical_json,
    canonical_row,
    canonical_row_text,
    format_timestamp,
)
from keel.audit.chain import seal

GOLDEN_KEY = b"golden-audit-key-0123456789abcdef"
GOLDEN_ROW: dict[str, Any] = {
    "seq": 42,
    "key_id": "k1",
    "prev_hash": "ab" * 32,
    "occurred_at": datetime(2026, 2, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2))),
    "action": "authn_login_fail",
    "result": "failure",
    "actor_type": "anonymous",
    "actor_id": None,
    "target_type": "user",
    "target_id": 'ünïcode "quoted" \\ tab\t',
    "source_ip": "2001:db8::1",
    "user_agent": "curl/8.5",
    "request_id": "req-1",
    "details": {"z": [1, True, None], "a": {"y": "é", "b": -7}},
}
# Written out by hand from the documented rules; changing it breaks every stored chain.
GOLDEN_BYTES = (
    '{"action":"authn_login_fail","actor_id":null,"actor_type":"anonymous",'
    '"details":{"a":{"b":-7,"y":"é"},"z":[1,true,null]},"key_id":"k1",'
    '"occurred_at":"2026-02-03T02:05:06.000007Z","prev_hash":"' + "ab" * 32 + '",'
    '"request_id":"req-1","result":"failure","seq":42,"source_ip":"2001:db8::1",'
    '"target_id":"ünïcode \\"quoted\\" \\\\ tab\\t","target_type":"user",'
    '"user_agent":"curl/8.5","v":1}'
).encode()
# Computed independently: openssl dgst -sha256 -hmac "golden-audit-key-0123456789abcdef"
GOLDEN_HASH = "6a85c9c2d10dc9c3e8d35b791d9156d3234f6b0d004d16da88cd346cf30f8032"


def test_golden_vector() -> None:
    canonical = canonical_row(**GOLDEN_ROW)
    assert canonical == GOLDEN_BYTES
    assert seal(GOLDEN_KEY, canonical) == GOLDEN_HASH


def test_the_row_form_is_canonical_json_of_the_documented_object() -> None:
    row = dict(GOLDEN_ROW)
    row["occurred_at"] = format_timestamp(row["occurred_at"])
    assert canonical_row(**GOLDEN_ROW) == canonical_json({"v": FORMAT_VERSION, **row})


def test_keys_are_sorted_at_every_level_and_nothing_is_padded() -> None:
    assert canonical_json({"b": {"d": 1, "c": 2}, "a": [{"f": 0, "e": 0}]}) == (
        b'{"a":[{"e":0,"f":0}],"b":{"c":2,"d":1}}'
    )


@pytest.mark.parametrize(
    "value",
    [1.0, {"a": 0.5}, [1, [2, float("nan")]], {"deep": {"er": [{"x": 1e9}]}}],
)
def test_floats_are_refused_anywhere(value: Any) -> None:
    with pytest.raises(ValueError, match="float"):
        canonical_json(value)


def test_non_json_values_are_refused() -> None:
    with pytest.raises(TypeError):
        canonical_json({"when": datetime.now(UTC)})


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00.000000Z"),
        (
            datetime(2026, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=1, minutes=30))),
            "2026-01-01T00:00:00.000000Z",
        ),
        (
            datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
            "2026-01-01T04:59:59.999999Z",
        ),
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05.000000Z"),
    ],
)
def test_timestamps_are_utc_with_six_digits(moment: datetime, text: str) -> None:
    assert format_timestamp(moment) == text


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        format_timestamp(datetime(2026, 1, 1))  # noqa: DTZ001


text_or_none = st.none() | st.text()
json_leaf = st.none() | st.booleans() | st.integers() | st.text()
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


@given(
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    fields=st.lists(text_or_none, min_size=6, max_size=6),
    names=st.lists(st.text(min_size=1), min_size=3, max_size=3),
    details=st.dictionaries(st.text(max_size=8), json_value, max_size=5),
    moment=st.datetimes(timezones=st.just(UTC)),
)
def test_fast_assembly_equals_the_definition(
    seq: int, fields: list[str | None], names: list[str], details: dict[str, Any], moment: datetime
) -> None:
    """``canonical_row_text`` writes the keys by hand; it must equal ``canonical_json``."""
    if not _encodable([fields, names, details]):
        return  # lone surrogates have no UTF-8 form: both refuse them
    actor_id, target_type, target_id, source_ip, user_agent, request_id = fields
    action, result, actor_type = names
    row = {
        "v": FORMAT_VERSION,
        "seq": seq,
        "key_id": "k1",
        "prev_hash": "0" * 64,
        "occurred_at": format_timestamp(moment),
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
    fast = canonical_row_text(
        seq,
        "k1",
        "0" * 64,
        format_timestamp(moment),
        action,
        result,
        actor_type,
        actor_id,
        target_type,
        target_id,
        source_ip,
        user_agent,
        request_id,
        canonical_json(details).decode(),
    )
    assert fast == canonical_json(row)
    assert json.loads(fast) == row


@given(details=st.dictionaries(st.text(max_size=8), json_value, max_size=6))
def test_canonical_json_is_stable_under_reordering(details: dict[str, Any]) -> None:
    if not _encodable(details):
        return
    reordered = dict(reversed(list(details.items())))
    assert canonical_json(details) == canonical_json(reordered)
    assert canonical_json(json.loads(canonical_json(details))) == canonical_json(details)


def test_seq_must_be_an_int() -> None:
    with pytest.raises(TypeError):
        canonical_row_text(
            True, "k", "h", "t", "a", "r", "t", None, None, None, None, None, None, "{}"
        )
