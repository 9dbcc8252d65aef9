"""``JsonBudget``: members, elements and depth counted over raw chunks, strings skipped."""

from __future__ import annotations

import json
import time

import pytest

from keel.api.middleware.json_budget import JsonBudget

MEMBERS, DEPTH = 64, 8


def _fits(body: bytes, chunk: int | None = None) -> bool:
    budget = JsonBudget(max_members=MEMBERS, max_depth=DEPTH)
    size = chunk or max(1, len(body))
    return all(budget.feed(body[i : i + size]) for i in range(0, len(body), size))


def _object(members: int) -> bytes:
    return json.dumps({f"k{i}": i for i in range(members)}).encode()


def _array(elements: int) -> bytes:
    return json.dumps(list(range(elements))).encode()


def _nested(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


TRICKY_STRING = json.dumps({"s": 'a:b,c{d[e"f\\g\\"h' + "\\" * 7 + "\u00e9" * 3 + '":,[{'}).encode()


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 5, 7, 13])
def test_the_bounds_hold_at_every_chunk_size(chunk: int | None) -> None:
    assert _fits(_object(MEMBERS), chunk)
    assert not _fits(_object(MEMBERS + 1), chunk)
    assert _fits(_array(MEMBERS + 1), chunk)  # n elements, n - 1 commas
    assert not _fits(_array(MEMBERS + 2), chunk)
    assert _fits(_nested(DEPTH), chunk)
    assert not _fits(_nested(DEPTH + 1), chunk)


@pytest.mark.parametrize("chunk", range(1, 12))
def test_structure_inside_strings_is_not_counted(chunk: int) -> None:
    body = b"[" + b",".join([TRICKY_STRING] * (MEMBERS // 2)) + b"]"
    assert _fits(body, chunk)
    many = json.dumps({"p": ":,{[" * 10_000}).encode()
    assert _fits(many, chunk * 97)


def test_tokens_without_members_are_bounded_too() -> None:
    assert not _fits(b'["a"' + b'"a"' * 1000 + b"]")  # adjacent strings: not JSON
    assert not _fits(b"[" + b"[]" * 1000 + b"]")


def test_more_closed_than_opened_is_left_to_the_parser() -> None:
    assert _fits(b"]" * 100_000 + _object(MEMBERS + 10))


def test_refusing_a_megabyte_of_members_is_cheap() -> None:
    body = b'{"a":1' + b"".join(b',"%x":1' % i for i in range(120_000)) + b"}"
    best = min(_refusal_seconds(body) for _ in range(5))
    assert best < 0.005, best


def _refusal_seconds(body: bytes) -> float:
    budget = JsonBudget(max_members=256, max_depth=32)
    started = time.perf_counter()
    assert not budget.feed(body)
    return time.perf_counter() - started


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        JsonBudget(max_members=0, max_depth=1)
