"""A loopback TCP server that answers each connection with whatever a test's handler says.

The probes' judgement is tested against servers that misbehave on purpose
(a ``Server`` header, an echoed TRACE, a served pipelined request...), which a
real keel never does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

from keel.report._wire import Target

__all__ = ["Handler", "fake_server", "response"]

#: Gets the first bytes a client sent on a connection; returns the bytes to answer.
Handler = Callable[[bytes], bytes]


def response(status: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _serve(listener: socket.socket, handler: Handler, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2.0)
            data = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    data += piece
                conn.sendall(handler(data))


@contextlib.contextmanager
def fake_server(handler: Handler) -> Iterator[Target]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                _serve(listener, handler, stop)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield Target("http", "127.0.0.1", listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
