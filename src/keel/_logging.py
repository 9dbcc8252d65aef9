"""JSON logs on stdout: one line per event, secrets redacted, control characters escaped.

Every record becomes one JSON object on one line. Structured fields travel in
``extra={"fields": {...}}`` (see ``event``). Values under secret-looking keys
are replaced before formatting (SEC-65), and ``json.dumps`` with
``ensure_ascii`` escapes CR, LF and every other control character, so a value
can never forge a second line (SEC-66, CWE-117).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import traceback
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, TextIO

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "configure_logging",
    "event",
    "format_exception",
    "redact",
    "request_id_var",
]

# Set by the request-context middleware; every log line inside a request carries it.
request_id_var: ContextVar[str | None] = ContextVar("keel_request_id", default=None)

REDACTED: Final = "[redacted]"

# Keys whose values are never logged, whatever they hold.
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|authorization|cookie|credential"
    r"|private|session[_-]?key|otp|totp|recovery|signature|dsn|database_url|redis_url",
    re.IGNORECASE,
)
# uvicorn adds ``color_message`` (the same text with ANSI colours) to its records.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "fields",
    "color_message",
}


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    # Keys repeat from line to line; the regex runs once per distinct key.
    return _SECRET_KEY.search(key) is not None


def redact(value: object, _depth: int = 0) -> object:
    """Return ``value`` with every secret-looking key's value replaced."""
    if type(value) in _SCALARS:
        return value  # the common case, first: no ABC checks per field
    if _depth > 8:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if _is_secret_key(str(k)) else redact(v, _depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            # gunicorn's workers share one stream: the pid tells their lines apart.
            "pid": record.process,
        }
        request_id = request_id_var.get()
        if request_id is not None:
            payload["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            payload.update(fields)
        for key, val in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_") and key not in payload:
                payload[key] = val
        if record.exc_info and record.exc_info[0] is not None:
            payload["exc_type"] = record.exc_info[0].__name__
            payload["exc"] = format_exception(record.exc_info[1])
        return json.dumps(redact(payload), ensure_ascii=True, separators=(",", ":"), default=str)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, oldest first."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        cause = current.__cause__
        current = (
            cause
            if cause is not None
            else (None if current.__suppress_context__ else current.__context__)
        )
    return chain[::-1]


def _is_statement_error(exc: BaseException) -> bool:
    # SQLAlchemy's StatementError, by shape: this module imports no database library.
    return hasattr(exc, "statement") and hasattr(exc, "params") and hasattr(exc, "orig")


def format_exception(exc: BaseException | None) -> str:
    """The traceback of ``exc``; without any message when a database statement failed.

    A driver's message can carry a bound value (asyncpg's "invalid input for
    query argument $1: <value>"), and SQLAlchemy's adds the parameters unless
    the engine hides them. When the chain holds a failed statement, each
    exception is named by its type only, plus the statement (placeholders, no
    values) and the SQLSTATE; the frames are kept.
    """
    if exc is None:
        return ""
    chain = _chain(exc)
    if not any(_is_statement_error(each) for each in chain):
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    parts: list[str] = []
    for index, each in enumerate(chain):
        if index:
            parts.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
                if chain[index].__cause__ is chain[index - 1]
                else "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(each.__traceback__))
        kind = type(each)
        line = f"{kind.__module__}.{kind.__qualname__}"
        state = getattr(each, "sqlstate", None) or getattr(each, "pgcode", None)
        if isinstance(state, str):
            line += f" [SQLSTATE {state}]"
        statement = getattr(each, "statement", None) if _is_statement_error(each) else None
        if isinstance(statement, str):
            line += f" [SQL: {statement}] (message and parameters not logged)"
        parts.append(line + "\n")
    return "".join(parts)


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log the event ``name`` with structured ``fields``."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send keel's, uvicorn's and gunicorn's logs to ``stream`` (stdout) as JSON lines.

    Called by the process entry points (CLI, gunicorn hooks), never at import.
    """
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    # Alembic announces each of its plugins at INFO on every command.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # keel writes its own access line; uvicorn's would duplicate it unescaped.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    access.disabled = True
