from __future__ import annotations

import ast
import threading
import time
from typing import Any, cast

import pytest

from keel.db import migrate
from keel.db.revision import HEAD_REVISION, expected_heads


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    assert migrate.head() == HEAD_REVISION


def test_the_heads_read_from_the_files_are_alembics() -> None:
    assert expected_heads() == migrate.heads() == {HEAD_REVISION}


def test_revision_files_are_never_parsed_by_two_threads_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPython 3.11's AST conversion keeps its recursion depth in per-interpreter state:
    two threads converting at once can fail with ``SystemError: AST constructor recursion
    depth mismatch`` (seen when a warm-up's schema check met a caller's). The parse is
    serialised; a parse slowed down here must never overlap another."""
    inside = 0
    most = 0
    guard = threading.Lock()
    parse = ast.parse

    def slow_parse(source: str, *args: Any, **kwargs: Any) -> ast.Module:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.002)
        try:
            return cast(ast.Module, parse(source, *args, **kwargs))
        finally:
            with guard:
                inside -= 1

    monkeypatch.setattr(ast, "parse", slow_parse)
    expected = expected_heads()
    results: list[frozenset[str]] = []

    def read() -> None:
        results.append(expected_heads())

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4
    assert most == 1
