"""JSON log lines: one per event, secrets redacted (SEC-65), no forged lines (SEC-66)."""

from __future__ import annotations

import io
import json
import logging
import os

from keel._logging import REDACTED, JsonFormatter, event, request_id_var


def _logger() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"keel.test.logging.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_sec_66_control_characters_cannot_forge_a_line() -> None:
    logger, stream = _logger()
    event(
        logger, logging.INFO, "login", username="bob\r\n2026-01-01 INFO admin login ok\x00\x1b[2J"
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["username"].startswith("bob\r\n2026")  # kept, but escaped on the wire
    assert "\\r\\n" in lines[0]
    assert "\x1b" not in lines[0]


def test_sec_65_secret_looking_keys_are_redacted_at_any_depth() -> None:
    logger, stream = _logger()
    event(
        logger,
        logging.INFO,
        "thing",
        password="canary-1",
        nested={"api_key": "canary-2", "items": [{"refresh_token": "canary-3"}]},
        authorization="Bearer canary-4",
        database_url="postgresql://u:canary-5@h/db",
        note="fine",
    )
    text = stream.getvalue()
    for n in range(1, 6):
        assert f"canary-{n}" not in text
    record = json.loads(text)
    assert record["password"] == REDACTED
    assert record["note"] == "fine"


def test_lines_carry_utc_time_level_logger_pid_and_request_id() -> None:
    logger, stream = _logger()
    token = request_id_var.set("req-123")
    try:
        logger.warning("plain message")
    finally:
        request_id_var.reset(token)
    record = json.loads(stream.getvalue())
    assert record["ts"].endswith("+00:00")
    assert record["level"] == "warning"
    assert record["event"] == "plain message"
    assert record["pid"] == os.getpid()
    assert record["request_id"] == "req-123"


def test_uvicorn_colour_copies_and_exceptions() -> None:
    logger, stream = _logger()
    logger.info("x", extra={"color_message": "\x1b[32mx\x1b[0m"})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "color_message" not in first
    assert second["exc_type"] == "ValueError"
    assert "Traceback" in second["exc"]
