"""The raw HTTP/1.1 the probes speak: targets, and responses read back from bytes."""

from __future__ import annotations

import pytest

from keel.report._wire import Target, Unreachable, parse_responses, request
from tests.runtime._harness import free_port


def test_a_target_is_the_instance_root() -> None:
    assert str(Target.parse("http://127.0.0.1:8000")) == "http://127.0.0.1:8000"
    assert str(Target.parse("https://keel.example/")) == "https://keel.example"
    assert Target.parse("https://keel.example").port == 443
    assert Target.parse("http://[::1]:81").host_header == "[::1]:81"


@pytest.mark.parametrize(
    "url", ["ftp://keel.example", "keel.example:80", "http://keel.example/api", "http://h:99999"]
)
def test_anything_but_an_instance_root_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        Target.parse(url)


def test_pipelined_chunked_and_sized_responses_are_read_apart() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nServer: x\r\n\r\nno"
        b"HTTP/1.1 400 Bad Request\r\n\r\nrest until close"
    )
    first, second, third = parse_responses(data)
    assert (first.status, first.body) == (200, b"abc")
    assert (second.status, second.body, second.header("SERVER")) == (404, b"no", "x")
    assert (third.status, third.body) == (400, b"rest until close")


def test_nobody_listening_is_unreachable() -> None:
    with pytest.raises(Unreachable, match="cannot connect"):
        request(Target("http", "127.0.0.1", free_port()), "GET", "/livez")
