"""A failed statement's traceback in a log line names types, SQL and SQLSTATE, never values."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import StatementError

from keel._logging import format_exception

CANARY = "canary-5d1c0b"


def _failed_statement(*, hide_parameters: bool) -> StatementError:
    engine = create_engine("sqlite://", hide_parameters=hide_parameters)
    try:
        with engine.connect() as conn, pytest.raises(StatementError) as caught:
            conn.execute(text("SELECT :v FROM no_such_table"), {"v": CANARY})
    finally:
        engine.dispose()
    return caught.value


@pytest.mark.parametrize("hide_parameters", [True, False])
def test_a_failed_statement_is_logged_without_its_parameters_or_messages(
    hide_parameters: bool,
) -> None:
    error = _failed_statement(hide_parameters=hide_parameters)
    logged = format_exception(error)
    assert CANARY not in logged
    assert "no such table" not in logged  # the driver's message is not kept either
    assert "[SQL: SELECT ? FROM no_such_table]" in logged
    assert "sqlite3.OperationalError" in logged
    assert "Traceback (most recent call last):" in logged


def test_any_other_exception_keeps_its_message() -> None:
    try:
        raise RuntimeError(f"plain failure {CANARY}")
    except RuntimeError as exc:
        logged = format_exception(exc)
    assert f"RuntimeError: plain failure {CANARY}" in logged
