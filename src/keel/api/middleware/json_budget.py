"""``JsonBudget``: how many members and how deep a JSON body is, counted as it arrives.

Parsing a body and validating it costs time on the event loop in proportion
to what it holds: a 1 MiB object of unknown members took 0.27-0.8 s to be
refused by validation, long enough to push a worker's Redis reads past their
timeout. The budget is counted over the raw bytes, chunk by chunk, before
anything parses them, and refuses once the body holds more than
``max_members`` members and elements or nests deeper than ``max_depth``.

Only structure outside strings counts: a string is skipped by one regular
expression however long it is (and may span chunks). Members are the ``:`` of
objects, elements the ``,`` of arrays; every string and bracket counts as a
token as well, and more than four tokens per allowed member (what any valid
body stays under) is refused the same way, so the loop here runs a bounded
number of times per body whatever it contains. Malformed JSON is not judged
here: once the text can no longer be valid the count stops, and the parser
refuses it.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["JsonBudget"]

# One token: a whole string (or the part of one that ends the chunk), or a structural byte.
_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*("|\\?\Z)|[{}\[\],:]', re.DOTALL)
# The rest of a string the previous chunk left open.
_STRING_REST: Final = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*("|\\?\Z)', re.DOTALL)
_TOKENS_PER_MEMBER: Final = 4
_QUOTE: Final = b'"'
_BACKSLASH: Final = b"\\"
_OPEN: Final = {ord("{"): True, ord("["): False}  # True: an object
_CLOSE: Final = frozenset(b"}]")
_COLON: Final = ord(":")
_STRING: Final = ord('"')


class JsonBudget:
    """Feed a body's chunks in order; :meth:`feed` says when the body is past the budget."""

    __slots__ = (
        "_done",
        "_escaped",
        "_in_string",
        "_max_depth",
        "_max_members",
        "_max_tokens",
        "_members",
        "_stack",
        "_tokens",
    )

    def __init__(self, *, max_members: int, max_depth: int) -> None:
        if max_members < 1 or max_depth < 1:
            raise ValueError("max_members and max_depth must be at least 1")
        self._max_members = max_members
        self._max_depth = max_depth
        self._max_tokens = _TOKENS_PER_MEMBER * max_members + 2 * max_depth
        self._members = 0
        self._tokens = 0
        self._stack: list[bool] = []  # the open containers, True for an object
        self._in_string = False
        self._escaped = False  # the chunk ended on a backslash inside a string
        self._done = False  # malformed: the parser will refuse it, stop counting

    def feed(self, chunk: bytes) -> bool:
        """Count ``chunk``; ``False`` once the body is past the budget (then stop feeding)."""
        if self._done or not chunk:
            return True
        position = 0
        if self._in_string:
            if self._escaped:
                self._escaped = False
                position = 1  # the byte the previous chunk's backslash escapes
            rest = _STRING_REST.match(chunk, position)
            assert rest is not None  # it matches at the end of the chunk at worst
            if not self._string_ended(rest.group(1)):
                return True
            position = rest.end()
        stack = self._stack
        for token in _TOKEN.finditer(chunk, position):
            self._tokens += 1
            if self._tokens > self._max_tokens:
                return False
            byte = chunk[token.start()]
            if byte == _STRING:
                if not self._string_ended(token.group(1)):
                    return True  # the chunk ended inside it
            elif byte in _OPEN:
                stack.append(_OPEN[byte])
                if len(stack) > self._max_depth:
                    return False
            elif byte in _CLOSE:
                if not stack:
                    self._done = True  # more closed than opened: not JSON
                    return True
                stack.pop()
            elif stack and stack[-1] == (byte == _COLON):
                # A ":" in an object is a member; a "," in an array, one more element.
                self._members += 1
                if self._members > self._max_members:
                    return False
        return True

    def _string_ended(self, end: bytes) -> bool:
        """Whether the string closed (``end`` is its quote); else it goes on in the next chunk."""
        self._in_string = end != _QUOTE
        self._escaped = end == _BACKSLASH
        return not self._in_string
