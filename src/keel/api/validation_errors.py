"""What a request validation error may show (SEC-52), and when it is a wrong media type (SEC-51).

:func:`clean_errors` keeps only each error's ``loc``, ``type`` and ``msg``,
clipped, with any message that repeats a submitted string replaced;
:func:`wrong_media_type` tells a JSON-body route's body that is not declared
as JSON (a 415) from one that did not validate (a 422). ``keel.api.errors``
turns both into problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from fastapi.params import Form
from starlette.requests import Request

__all__ = ["MAX_ERRORS", "clean_errors", "wrong_media_type"]

#: At most this many errors are reported.
MAX_ERRORS: Final = 50
_LOC_PART_MAX: Final = 64
_MSG_MAX: Final = 200


def clean_errors(raw: Sequence[Any]) -> list[dict[str, Any]]:
    """The first :data:`MAX_ERRORS` of pydantic's ``errors()``, cleaned for an answer."""
    return [_clean_error(err) for err in raw[:MAX_ERRORS]]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _strings_in(value: object, depth: int = 0) -> Iterable[str]:
    if depth > 4:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, Mapping):
        for item in list(value.values())[:100]:
            yield from _strings_in(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value[:100]:
            yield from _strings_in(item, depth + 1)


def _echoes_input(msg: str, submitted: object) -> bool:
    """Whether a message repeats a submitted string (a custom validator's f-string, say)."""
    return any(len(text) >= 4 and text in msg for text in _strings_in(submitted))


def _clean_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only ``loc``, ``type`` and ``msg``; never ``input``, ``ctx`` or ``url`` (SEC-52)."""
    loc: list[str | int] = []
    for part in error.get("loc", ()):
        loc.append(part if isinstance(part, int) else _clip(str(part), _LOC_PART_MAX))
    msg = str(error.get("msg", ""))
    if _echoes_input(msg, error.get("input")):
        msg = "Invalid value"
    return {"loc": loc, "type": str(error.get("type", "invalid")), "msg": _clip(msg, _MSG_MAX)}


def _media_type(request: Request) -> str | None:
    value = request.headers.get("content-type")
    if value is None:
        return None
    return value.split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _has_body(request: Request) -> bool:
    if "transfer-encoding" in request.headers:
        return True
    length = request.headers.get("content-length", "0").strip()
    return length.isdigit() and int(length) > 0


def wrong_media_type(request: Request, errors: list[dict[str, Any]]) -> bool:
    """A JSON-body route got a body that is not declared as JSON (SEC-51 → 415)."""
    if not any(err["loc"][:1] == ["body"] for err in errors):
        return False
    body_field = getattr(request.scope.get("route"), "body_field", None)
    if body_field is None or isinstance(getattr(body_field, "field_info", None), Form):
        return False
    media_type = _media_type(request)
    return _has_body(request) and (media_type is None or not _is_json(media_type))
