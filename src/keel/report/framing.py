"""Live probes of request framing: an oversized body, and request-smuggling framings.

Each smuggling probe writes one malformed request followed, on the same
connection, by a pipelined ``GET /livez``. A server that accepted the framing
(or read it differently from a proxy in front) would answer twice; keel's
server refuses it (4xx) or closes, and answers once (SEC-63; RFC 9112 §6.3,
§5.2). The body probe sends one byte more than ``KEEL_MAX_BODY_BYTES`` and
expects 413 (SEC-51).
"""

from __future__ import annotations

from keel.report._wire import Target, exchange
from keel.report.claim import Verdict, failed, passed
from keel.settings import Settings

__all__ = ["FRAMINGS", "oversized_body_refused", "smuggling_refused"]

_PIPELINED = "GET /livez HTTP/1.1\r\nHost: {host}\r\n\r\n"

#: name -> (what it is, the malformed request; ``{host}`` is filled in).
FRAMINGS: dict[str, tuple[str, str]] = {
    "content_length_with_transfer_encoding": (
        "Content-Length and Transfer-Encoding together",
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    "duplicate_content_length": (
        "two conflicting Content-Length fields",
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 0\r\n\r\nabc",
    ),
    "obs_fold": (
        "a header folded onto a second line (obs-fold)",
        "GET /livez HTTP/1.1\r\nHost: {host}\r\nX-Keel-Report: a\r\n folded\r\n\r\n",
    ),
}


def smuggling_refused(target: Target, name: str) -> Verdict:
    """Judge one framing of :data:`FRAMINGS`."""
    what, template = FRAMINGS[name]
    payload = (template + _PIPELINED).format(host=target.host_header).encode("latin-1")
    answered = exchange(target, payload)
    statuses = [response.status for response in answered.responses]
    if not statuses:
        if answered.closed_by_server:
            return passed(f"{what}: the connection was closed without an answer")
        return failed(f"{what}: no answer and the connection stayed open")
    if len(statuses) > 1:
        return failed(f"{what}: answered {statuses}: the pipelined request was served")
    if not 400 <= statuses[0] < 500:
        return failed(f"{what}: answered {statuses[0]}, not a 4xx refusal")
    closed = ", then closed" if answered.closed_by_server else ""
    return passed(f"{what}: answered {statuses[0]}{closed}; the pipelined request got no answer")


def oversized_body_refused(target: Target, settings: Settings) -> Verdict:
    size = settings.http.max_body_bytes + 1
    head = (
        f"POST / HTTP/1.1\r\nHost: {target.host_header}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode("latin-1")
    answered = exchange(target, head, then=b" " * size)
    if not answered.responses:
        return failed(f"a {size}-byte body got no answer")
    status = answered.responses[0].status
    if status != 413:
        return failed(f"a {size}-byte body (KEEL_MAX_BODY_BYTES + 1) answered {status}, not 413")
    return passed(f"a {size}-byte body (KEEL_MAX_BODY_BYTES + 1) answered 413")
