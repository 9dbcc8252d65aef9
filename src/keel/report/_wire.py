"""Raw HTTP/1.1 over a socket (TLS for ``https://``): what the live probes send and read.

The probes write exact bytes (malformed framings included), so no HTTP client
library stands between them and the server. Responses are parsed leniently
enough to read whatever comes back; the probes judge it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["Exchange", "Response", "Target", "Unreachable", "exchange", "request"]

_MAX_READ = 4 * 1024 * 1024


class Unreachable(Exception):
    """Nothing could be sent to, or read from, the instance."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a running instance listens: ``http://host:port`` or ``https://host:port``."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the URL must be http://host[:port] or https://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("the URL must name the instance's root, without a path")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ValueError("the URL's port is not a number from 1 to 65535") from exc
        return cls(parts.scheme, parts.hostname, port)

    @property
    def https(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.https else 80
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host_header}"


@dataclass(frozen=True, slots=True)
class Response:
    """One parsed response: status, headers (names lower-cased, in order) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    def has(self, name: str) -> bool:
        return self.header(name) is not None


@dataclass(frozen=True, slots=True)
class Exchange:
    """Every byte read after writing one payload, and whether the server closed."""

    data: bytes
    closed_by_server: bool
    responses: tuple[Response, ...] = field(default=())


def _connect(target: Target, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as exc:
        raise Unreachable(f"cannot connect to {target}: {exc.strerror or exc}") from exc
    if not target.https:
        return sock
    context = ssl.create_default_context()
    try:
        return context.wrap_socket(sock, server_hostname=target.host)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise Unreachable(f"TLS with {target} failed: {exc}") from exc


def exchange(
    target: Target,
    payload: bytes,
    *,
    then: bytes = b"",
    first_byte: float = 5.0,
    idle: float = 0.5,
) -> Exchange:
    """Write ``payload``; read until the server closes or, once it has answered, stays
    silent for ``idle`` s. ``then`` is written only if nothing came back within 1 s
    (a body the server may refuse before reading it)."""
    chunks: list[bytes] = []
    closed = False
    with _connect(target, first_byte) as sock:
        # A reset while writing means the server refused and closed: read what it said.
        with contextlib.suppress(OSError):
            closed = _write(sock, payload, then, chunks)
        deadline = time.monotonic() + first_byte
        while not closed and sum(map(len, chunks)) < _MAX_READ:
            wait = idle if chunks else max(0.0, deadline - time.monotonic())
            if wait <= 0:
                break
            sock.settimeout(wait)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            chunks.append(data)
    data = b"".join(chunks)
    return Exchange(data, closed, tuple(parse_responses(data)))


def _write(sock: socket.socket, payload: bytes, then: bytes, chunks: list[bytes]) -> bool:
    """Write ``payload`` (and ``then`` if no answer came within 1 s); whether the server closed."""
    sock.sendall(payload)
    if not then:
        return False
    sock.settimeout(1.0)
    try:
        first = sock.recv(65536)
    except TimeoutError:
        sock.sendall(then)
        return False
    chunks.append(first)
    return not first


def request(
    target: Target,
    method: str,
    path: str,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Response:
    """One request on a fresh connection (``Connection: close``); its one response."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {target.host_header}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    answered = exchange(target, head + body)
    if not answered.responses:
        raise Unreachable(f"{target} sent no HTTP response to {method} {path}")
    return answered.responses[0]


def parse_responses(data: bytes) -> list[Response]:
    """Every complete response in ``data`` (a body without a length runs to the end)."""
    found: list[Response] = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        head, data = data[:end].decode("latin-1").split("\r\n"), data[end + 4 :]
        status_line = head[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
            break
        try:
            status = int(status_line[1])
        except ValueError:
            break
        headers = tuple(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in head[1:])
        )
        fields = dict(headers)
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body, data = _dechunk(data)
        elif "content-length" in fields and fields["content-length"].isdigit():
            length = int(fields["content-length"])
            body, data = data[:length], data[length:]
        else:
            body, data = data, b""
        found.append(Response(status, headers, body))
    return found


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = bytearray()
    while True:
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return bytes(body), b""
        try:
            size = int(data[:line_end].split(b";")[0], 16)
        except ValueError:
            return bytes(body), b""
        data = data[line_end + 2 :]
        if size == 0:
            trailer_end = data.find(b"\r\n")
            return bytes(body), data[trailer_end + 2 :] if trailer_end >= 0 else b""
        body += data[:size]
        data = data[size + 2 :]
