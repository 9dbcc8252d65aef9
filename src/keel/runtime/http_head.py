"""``HeadLimitedProtocol``: uvicorn's httptools protocol, bounding each request head as it arrives.

uvicorn bounds neither the number of header fields nor the bytes of a request
head, and httptools keeps a header value it has not finished in memory: one
worker answered a 48 MB head and grew by about 200 MB for ten unfinished 20 MB
ones. This protocol counts while parsing:

- the raw bytes handed to the parser while a head is being read: data past
  ``max_bytes`` is never fed, so what the parser holds stays below the bound
  plus one socket read (a pipelined head that starts inside a read already
  counting towards the previous message's body is counted from its next read);
- the request target and every field (``name: value\\r\\n``) against ``max_bytes``;
- the fields against ``max_fields``.

Past a bound the client gets ``431 Request Header Fields Too Large`` (RFC 6585
§5) as problem+json with ``code`` ``headers_too_large`` and the connection is
closed: nothing more is read from it. nginx (``large_client_header_buffers``
4x8k) and gunicorn's own parser (``limit_request_fields`` 100,
``limit_request_field_size`` 8190) bound the same things.

The bounds are per process, set once by :func:`configure_head_limits` when a
worker loads (before it accepts anything); uvicorn creates the protocol by its
import path, which keeps ``keel dev``'s reloading child working too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from keel._logging import event
from keel.security.headers import HeaderPolicy

__all__ = [
    "HEAD_LIMITED_PROTOCOL",
    "HeadLimitedProtocol",
    "HeadLimits",
    "configure_head_limits",
]

#: What uvicorn's ``http`` option is set to (it imports the class itself).
HEAD_LIMITED_PROTOCOL: Final = "keel.runtime.http_head:HeadLimitedProtocol"

_log = logging.getLogger("keel.server")
_LINE_OVERHEAD: Final = 4  # ": " and CRLF around each field


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """At most ``max_fields`` header fields and ``max_bytes`` of request line and fields."""

    max_fields: int = 100
    max_bytes: int = 16_384

    def __post_init__(self) -> None:
        if self.max_fields < 1 or self.max_bytes < 1024:
            raise ValueError("max_fields must be >= 1 and max_bytes >= 1024")


class _HeadTooLarge(Exception):
    """Raised from a parser callback: stops httptools where it is."""


def _refusal(max_bytes: int, max_fields: int) -> tuple[bytes, bytes]:
    """The 431's status line, and its headers and body (uvicorn's default headers go between)."""
    body = json.dumps(
        {
            "type": "urn:keel:problem:headers_too_large",
            "title": "Request Header Fields Too Large",
            "status": 431,
            "detail": f"The request head must stay within {max_fields} header fields and "
            f"{max_bytes} bytes.",
            "code": "headers_too_large",
            "request_id": None,
        },
        separators=(",", ":"),
    ).encode("utf-8")
    headers = HeaderPolicy(hsts_max_age=0).apply(
        [
            (b"content-type", b"application/problem+json"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ],
        path="",
        https=False,
        no_store=True,
    )
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return b"HTTP/1.1 431 Request Header Fields Too Large\r\n", lines + b"\r\n" + body


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that answers 431 and closes past :class:`HeadLimits`."""

    limits: ClassVar[HeadLimits] = HeadLimits()
    _reply: ClassVar[tuple[bytes, bytes]] = _refusal(limits.max_bytes, limits.max_fields)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request line and fields (or waiting for one)
        self._head_fed = 0  # raw bytes fed to the parser for this head
        self._head_bytes = 0  # request target and fields parsed so far
        self._fields = 0
        self._refused = False

    # -- feeding the parser ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        limit = self.limits.max_bytes
        while data and not self._refused:
            if not self._in_head:
                super().data_received(data)
                return
            room = limit - self._head_fed
            if room <= 0:
                self._refuse()
                return
            piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            self._head_fed += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return

    def send_400_response(self, msg: str) -> None:
        # httptools reports a callback's exception as a parse error; ours means 431.
        if self._refused:
            self._send_431()
        else:
            super().send_400_response(msg)

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._fields = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.limits.max_fields:
            self._refused = True
            raise _HeadTooLarge
        self._count(len(name) + len(value) + _LINE_OVERHEAD)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_fed = 0

    # -- refusing -------------------------------------------------------------------------------

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_bytes:
            self._refused = True
            raise _HeadTooLarge

    def _refuse(self) -> None:
        self._refused = True
        self._send_431()

    def _send_431(self) -> None:
        if self.transport.is_closing():
            return
        event(
            _log,
            logging.INFO,
            "request_head_too_large",
            client=self.client[0] if self.client else None,
            fields=self._fields,
            max_fields=self.limits.max_fields,
            max_bytes=self.limits.max_bytes,
        )
        status, rest = self._reply
        default = b"".join(
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        )
        self.transport.write(status + default + rest)
        self.transport.close()


def configure_head_limits(limits: HeadLimits) -> None:
    """Bound every request head this process reads from now on (call before serving)."""
    HeadLimitedProtocol.limits = limits
    HeadLimitedProtocol._reply = _refusal(limits.max_bytes, limits.max_fields)
