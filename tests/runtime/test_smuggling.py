"""SEC-63: malformed HTTP/1.1 framing is refused and nothing rides in behind it.

Each payload is one malformed request followed, on the same connection, by a
pipelined ``GET /_hits/smuggled``. A parser that accepted the framing (or read
it differently from a front proxy) would answer a second request; keel must
instead refuse (4xx) or close, answer at most once, and its app must never see
the smuggled path. RFC 9112 §6 (message body length), §5 (field syntax), §7
(chunked coding); HTTP Garden's trophy list; h11 #90 is why httptools is pinned.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.runtime._harness import RunningServer, exchange, running_server

pytestmark = pytest.mark.runtime

SMUGGLED_PREFIX = "/_hits/smuggled-"


def _smuggled_path(name: str) -> str:
    """Each payload smuggles its own path, so one that gets through blames only itself."""
    return SMUGGLED_PREFIX + name


def _smuggled(name: str) -> bytes:
    return f"GET {_smuggled_path(name)} HTTP/1.1\r\nHost: keel.test\r\n\r\n".encode()


_POST = b"POST /_test/echo HTTP/1.1\r\nHost: keel.test\r\n"
_TE = b"Transfer-Encoding: chunked\r\n"


def _chunked(body: bytes) -> bytes:
    """A POST whose chunked body is ``body`` (written raw, including any anomaly)."""
    return _POST + _TE + b"\r\n" + body


MALFORMED: dict[str, bytes] = {
    # Content-Length and Transfer-Encoding together (RFC 9112 §6.3 ¶3).
    "cl_then_te": _POST + b"Content-Length: 5\r\n" + _TE + b"\r\n0\r\n\r\n",
    "te_then_cl": _POST + _TE + b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    # Content-Length that is not exactly one decimal number (RFC 9110 §8.6).
    "cl_duplicate_same": _POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "cl_duplicate_conflicting": _POST + b"Content-Length: 3\r\nContent-Length: 0\r\n\r\nabc",
    "cl_list_in_one_line": _POST + b"Content-Length: 3, 3\r\n\r\nabc",
    "cl_plus_sign": _POST + b"Content-Length: +3\r\n\r\nabc",
    "cl_minus_sign": _POST + b"Content-Length: -3\r\n\r\nabc",
    "cl_hex": _POST + b"Content-Length: 0x3\r\n\r\nabc",
    "cl_inner_space": _POST + b"Content-Length: 1 2\r\n\r\nabc",
    "cl_underscore": _POST + b"Content-Length: 1_0\r\n\r\nabc",
    # Transfer-Encoding other than exactly "chunked" as the final coding.
    "te_chunked_then_identity": _POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te_identity": _POST + b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "te_xchunked": _POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te_chunked_twice": _POST + _TE + _TE + b"\r\n0\r\n\r\n",
    "te_chunked_chunked": _POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te_obs_fold_value": _POST + _TE + b" , identity\r\n\r\n0\r\n\r\n",
    "te_obs_fold_name": _POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "te_vertical_tab": _POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "te_space_before_colon": _POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    # Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1): answered at most once, then closed.
    "te_on_http_1_0": b"POST /_test/echo HTTP/1.0\r\nHost: keel.test\r\n" + _TE + b"\r\n0\r\n\r\n",
    # Chunk sizes that are not plain hex (RFC 9112 §7.1).
    "chunk_size_0x": _chunked(b"0x3\r\nabc\r\n0\r\n\r\n"),
    "chunk_size_underscore": _chunked(b"0_3\r\nabc\r\n0\r\n\r\n"),
    "chunk_size_plus": _chunked(b"+3\r\nabc\r\n0\r\n\r\n"),
    "chunk_size_minus": _chunked(b"-3\r\nabc\r\n0\r\n\r\n"),
    "chunk_size_leading_space": _chunked(b" 3\r\nabc\r\n0\r\n\r\n"),
    "chunk_size_overflow": _chunked(b"1000000000000000003\r\nabc\r\n0\r\n\r\n"),
    "chunk_size_huge": _chunked(b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    # Chunk extensions that are not ;name[=value].
    "chunk_ext_control_char": _chunked(b"3;\x01\r\nabc\r\n0\r\n\r\n"),
    "chunk_ext_junk_after_space": _chunked(b"3 junk\r\nabc\r\n0\r\n\r\n"),
    # Bare LF and junk in chunked framing.
    "chunk_size_bare_lf": _chunked(b"3\nabc\r\n0\r\n\r\n"),
    "chunk_ext_bare_lf": _chunked(b"3;x\nabc\r\n0\r\n\r\n"),
    "chunk_data_bare_lf": _chunked(b"3\r\nabc\n0\r\n\r\n"),
    "chunk_data_junk": _chunked(b"3\r\nabcXX\r\n0\r\n\r\n"),
    "last_chunk_bare_lf": _chunked(b"3\r\nabc\r\n0\n\n"),
    # Field syntax (RFC 9112 §5): no whitespace before ':', no obs-fold, no CR/NUL/LF.
    "cl_space_before_colon": _POST + b"Content-Length : 3\r\n\r\nabc",
    "cl_tab_before_colon": _POST + b"Content-Length\t: 3\r\n\r\nabc",
    "obs_fold_continuation": b"GET /_test/pid HTTP/1.1\r\nHost: keel.test\r\nX-A: a\r\n b\r\n\r\n",
    "nul_in_value": b"GET /_test/pid HTTP/1.1\r\nHost: keel.test\r\nX-A: a\x00b\r\n\r\n",
    "cr_in_value": b"GET /_test/pid HTTP/1.1\r\nHost: keel.test\r\nX-A: a\rb\r\n\r\n",
    "bare_cr_ends_field": _POST + b"X-A: a\rContent-Length: 3\r\n\r\nabc",
    "bare_lf_in_header_block": (
        b"POST /_test/echo HTTP/1.1\nHost: keel.test\nContent-Length: 3\n\nabc"
    ),
    "space_in_field_name": b"GET /_test/pid HTTP/1.1\r\nHost: keel.test\r\nX A: b\r\n\r\n",
    "empty_field_name": b"GET /_test/pid HTTP/1.1\r\nHost: keel.test\r\n: b\r\n\r\n",
    # Request-line anomalies (RFC 9112 §3).
    "request_line_trailing_junk": b"GET /_test/pid HTTP/1.1 x\r\nHost: keel.test\r\n\r\n",
    "request_line_bad_version": b"GET /_test/pid HTTP/1.9\r\nHost: keel.test\r\n\r\n",
    "request_line_lowercase_method": b"get /_test/pid HTTP/1.1\r\nHost: keel.test\r\n\r\n",
    "request_line_nul_in_target": b"GET /_test/p\x00id HTTP/1.1\r\nHost: keel.test\r\n\r\n",
    "request_line_tab_separator": b"GET\t/_test/pid HTTP/1.1\r\nHost: keel.test\r\n\r\n",
    "request_line_bare_lf": b"GET /_test/pid HTTP/1.1\nHost: keel.test\r\n\r\n",
}


# Framed the same way by every parser (chunked is final), but a coding keel cannot
# undo: SEC-63 allows only exactly "chunked". uvicorn hands it to the app, so keel's
# framing middleware refuses it (and closes).
MALFORMED["te_gzip_then_chunked"] = _POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("smuggling")) as running:
        yield running


def _hits(server: RunningServer) -> list[str]:
    hits: list[str] = server.get("/_test/hits").json()
    return hits


def test_sec_63_there_are_at_least_twenty_framings() -> None:
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_sec_63_malformed_framing_is_refused_and_nothing_is_smuggled(
    server: RunningServer, name: str
) -> None:
    reply = exchange(server.port, MALFORMED[name] + _smuggled(name))

    assert len(reply.statuses) <= 1, reply.data
    refused = bool(reply.statuses) and 400 <= reply.statuses[0] < 500
    assert refused or reply.closed_by_server, reply.data
    assert _smuggled_path(name) not in _hits(server)


def test_sec_63_well_formed_pipelining_is_seen_by_the_detector(server: RunningServer) -> None:
    """Control: the same probe shape with valid framing does reach the second request."""
    body = b"abc"
    request = _POST + b"Content-Length: 3\r\n\r\n" + body
    second = b"GET /_hits/control HTTP/1.1\r\nHost: keel.test\r\n\r\n"

    reply = exchange(server.port, request + second)

    assert reply.statuses == [200, 200], reply.data
    assert b'{"length":3}' in reply.data
    assert "/_hits/control" in _hits(server)


def test_sec_63_chunked_coding_name_is_case_insensitive(server: RunningServer) -> None:
    """RFC 9112 §7: coding names are case-insensitive, so "Chunked" frames the body."""
    request = _POST + b"Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    second = b"GET /_hits/chunked-casing HTTP/1.1\r\nHost: keel.test\r\n\r\n"

    reply = exchange(server.port, request + second)

    assert reply.statuses == [200, 200], reply.data
    assert b'{"length":3}' in reply.data
    assert "/_hits/chunked-casing" in _hits(server)


def test_sec_63_no_smuggled_path_ever_reached_the_app(server: RunningServer) -> None:
    """Across the whole module, after every payload has been sent (order-independent)."""
    for name, payload in MALFORMED.items():
        exchange(server.port, payload + _smuggled(name))
    hits, logs = _hits(server), server.logs()
    for name in MALFORMED:
        assert _smuggled_path(name) not in hits
        assert _smuggled_path(name) not in logs
