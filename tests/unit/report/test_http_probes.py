"""Each live probe against servers that break its claim on purpose, and one that keeps it.

A real keel passes every probe (tests/runtime/test_security_report.py); these
prove each probe can fail, and says why.
"""

from __future__ import annotations

import json

import pytest

from keel.report import framing, http_probes
from keel.report._wire import Response, Target
from keel.report.claim import Outcome
from keel.security.headers import API_CSP, BASE_HEADERS
from keel.settings import Settings
from tests.unit.report._fake_server import fake_server, response

GOOD = {name: value for name, value in BASE_HEADERS} | {
    "Content-Security-Policy": API_CSP,
    "Cache-Control": "no-store",
}
PROBLEM = {**GOOD, "Content-Type": "application/problem+json"}


def _problem(status: int, code: str) -> bytes:
    body = {"type": f"urn:keel:problem:{code}", "title": "X", "status": status, "code": code}
    return response(status, PROBLEM, json.dumps(body).encode())


def _keel_like(request: bytes) -> bytes:
    """What keel answers, by request line: enough for every probe to pass."""
    line = request.split(b"\r\n", 1)[0]
    if line.startswith(b"GET /livez"):
        return response(200, GOOD, b'{"status":"ok"}')
    if line.startswith(b"GET /readyz"):
        return response(503, GOOD, b'{"status":"down"}')
    if line.startswith(b"TRACE"):
        return _problem(405, "method_not_allowed")
    if line.startswith(b"OPTIONS"):
        return _problem(405, "method_not_allowed")
    if line.startswith(b"POST /auth/login"):
        return _problem(400, "invalid_json")
    return _problem(404, "not_found")


@pytest.fixture
def settings() -> Settings:
    return Settings()


def test_a_server_that_keeps_every_claim_passes_every_probe(settings: Settings) -> None:
    probes = (
        http_probes.headers_on_2xx,
        http_probes.headers_on_4xx,
        http_probes.headers_on_5xx,
        http_probes.no_fingerprint_headers,
        http_probes.cors_refuses_foreign_origin,
        http_probes.trace_refused,
        http_probes.problems_without_internals,
        http_probes.docs_not_exposed,
    )
    with fake_server(_keel_like) as target:
        verdicts = {probe.__name__: probe(target, settings) for probe in probes}
    assert {name: v.outcome for name, v in verdicts.items()} == dict.fromkeys(
        verdicts, Outcome.PASS
    ), verdicts


def test_sec_56_a_missing_or_altered_header_fails(settings: Settings) -> None:
    altered = {**GOOD, "X-Frame-Options": "SAMEORIGIN"}
    del altered["Content-Security-Policy"]
    with fake_server(lambda _: response(200, altered)) as target:
        verdict = http_probes.headers_on_2xx(target, settings)
    assert verdict.outcome is Outcome.FAIL
    assert "content-security-policy missing" in verdict.evidence
    assert "x-frame-options differs" in verdict.evidence


def test_sec_56_headers_on_an_error_outside_the_routes_fall_back_to_the_431(
    settings: Settings,
) -> None:
    def handler(request: bytes) -> bytes:
        if request.startswith(b"GET /readyz"):
            return response(200, GOOD)
        return response(431, {"Content-Type": "application/problem+json"})  # no headers

    with fake_server(handler) as target:
        verdict = http_probes.headers_on_5xx(target, settings)
    assert verdict.outcome is Outcome.FAIL
    assert "GET /readyz answered 200" in verdict.evidence
    assert "answered 431" in verdict.evidence


def test_without_a_5xx_or_a_431_the_error_headers_are_not_checked(settings: Settings) -> None:
    with fake_server(lambda _: response(200, GOOD)) as target:  # no header limit at all
        verdict = http_probes.headers_on_5xx(target, settings)
    assert verdict.outcome is Outcome.NOT_CHECKED
    assert "fields answered 200, not 431" in verdict.evidence


def test_sec_57_https_needs_a_year_of_hsts() -> None:
    https = Target("https", "keel.example", 443)
    headers = tuple((name.lower(), value) for name, value in GOOD.items())
    weak = (*headers, ("strict-transport-security", "max-age=86400; includeSubDomains"))
    strong = (*headers, ("strict-transport-security", "max-age=63072000; includeSubDomains"))
    missing = ["strict-transport-security missing or weaker than a year"]
    assert http_probes._header_problems(Response(200, headers, b""), https) == missing
    assert http_probes._header_problems(Response(200, weak, b""), https) == missing
    assert http_probes._header_problems(Response(200, strong, b""), https) == []


def test_sec_59_a_server_header_fails(settings: Settings) -> None:
    with fake_server(lambda _: response(200, {**GOOD, "Server": "uvicorn"})) as target:
        verdict = http_probes.no_fingerprint_headers(target, settings)
    assert verdict.outcome is Outcome.FAIL
    assert "server on 200" in verdict.evidence


def test_sec_61_a_cors_grant_to_a_foreign_origin_fails(settings: Settings) -> None:
    granting = {**GOOD, "Access-Control-Allow-Origin": "*"}
    with fake_server(lambda _: response(200, granting)) as target:
        verdict = http_probes.cors_refuses_foreign_origin(target, settings)
    assert verdict.outcome is Outcome.FAIL
    assert "access-control-allow-origin" in verdict.evidence


def test_sec_54_an_answered_or_echoed_trace_fails(settings: Settings) -> None:
    with fake_server(lambda request: response(200, GOOD, request)) as target:
        verdict = http_probes.trace_refused(target, settings)
    assert verdict.outcome is Outcome.FAIL
    assert "echoed the request" in verdict.evidence


def test_sec_53_a_traceback_in_an_error_body_fails(settings: Settings) -> None:
    body = b'Traceback (most recent call last):\n  File "/app/keel/api.py", line 3'
    with fake_server(lambda _: response(500, {**GOOD, "Content-Type": "text/plain"}, body)) as t:
        verdict = http_probes.problems_without_internals(t, settings)
    assert verdict.outcome is Outcome.FAIL
    assert "not application/problem+json" in verdict.evidence

    leaking = json.dumps(
        {"type": "x", "title": "x", "status": 500, "code": "x", "detail": "sqlalchemy.exc.X"}
    ).encode()
    with fake_server(lambda _: response(500, PROBLEM, leaking)) as target:
        verdict = http_probes.problems_without_internals(target, settings)
    assert verdict.outcome is Outcome.FAIL
    assert "shows internals" in verdict.evidence


def test_sec_53_served_docs_fail(settings: Settings) -> None:
    with fake_server(lambda _: response(200, GOOD, b"<html>swagger</html>")) as target:
        verdict = http_probes.docs_not_exposed(target, settings)
    assert verdict.outcome is Outcome.FAIL
    assert verdict.evidence == "/docs answered 200, /redoc answered 200, /openapi.json answered 200"


@pytest.mark.parametrize("name", sorted(framing.FRAMINGS))
def test_sec_63_a_served_pipelined_request_fails(name: str) -> None:
    twice = response(200, GOOD, b"first") + response(200, GOOD, b"smuggled")
    with fake_server(lambda _: twice) as target:
        verdict = framing.smuggling_refused(target, name)
    assert verdict.outcome is Outcome.FAIL
    assert "the pipelined request was served" in verdict.evidence


def test_sec_63_an_accepted_framing_fails_and_a_refusal_passes() -> None:
    name = "duplicate_content_length"
    with fake_server(lambda _: response(200, GOOD)) as target:
        accepted = framing.smuggling_refused(target, name)
    with fake_server(lambda _: response(400, {"Connection": "close"})) as target:
        refused = framing.smuggling_refused(target, name)
    assert accepted.outcome is Outcome.FAIL
    assert "answered 200, not a 4xx refusal" in accepted.evidence
    assert refused.outcome is Outcome.PASS


def test_sec_51_a_body_over_the_limit_that_is_accepted_fails(settings: Settings) -> None:
    with fake_server(lambda _: response(200, GOOD)) as target:
        verdict = framing.oversized_body_refused(target, settings)
    assert verdict.outcome is Outcome.FAIL
    assert f"{settings.http.max_body_bytes + 1}-byte body" in verdict.evidence
    assert "answered 200, not 413" in verdict.evidence
