"""Live probes of a running instance: security headers, fingerprints, CORS, TRACE, errors, docs.

Each probe sends real requests to ``--url`` and judges what comes back
against what keel sets (:mod:`keel.security.headers`): SEC-53, SEC-54,
SEC-56, SEC-57, SEC-59 and SEC-61.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable

from keel.report._wire import Response, Target, request
from keel.report.claim import Verdict, failed, not_checked, passed
from keel.security.headers import API_CSP, BASE_HEADERS
from keel.settings import Settings

__all__ = [
    "cors_refuses_foreign_origin",
    "docs_not_exposed",
    "headers_on_2xx",
    "headers_on_4xx",
    "headers_on_5xx",
    "no_fingerprint_headers",
    "problems_without_internals",
    "trace_refused",
]

Probe = Callable[[Target, Settings], Verdict]

_REQUIRED = {name.lower(): value for name, value in BASE_HEADERS} | {
    "content-security-policy": API_CSP
}
#: SEC-57: a year at least, subdomains included.
_HSTS_MIN_AGE = 31_536_000
_FINGERPRINTS = ("server", "x-powered-by")
#: What a body leaking internals would show: a traceback, a driver, a source path.
_INTERNALS = re.compile(
    r"Traceback|File \"|site-packages|sqlalchemy|asyncpg|aiosqlite|psycopg|redis\.|"
    r"\.py\b|Exception|/usr/|/home/|/app/",
    re.IGNORECASE,
)
_PROBLEM_FIELDS = ("type", "title", "status", "code")
_FOREIGN_ORIGIN = "https://keel-security-report.invalid"
_DOCS = ("/docs", "/redoc", "/openapi.json")


def _missing_path() -> str:
    return f"/keel-security-report-{secrets.token_hex(4)}"


def _header_problems(response: Response, target: Target) -> list[str]:
    problems = []
    for name, expected in _REQUIRED.items():
        got = response.header(name)
        if got is None:
            problems.append(f"{name} missing")
        elif got != expected:
            problems.append(f"{name} differs from keel's policy")
    if not response.has("cache-control"):
        problems.append("cache-control missing")
    if target.https:
        hsts = response.header("strict-transport-security") or ""
        age = re.search(r"max-age=(\d+)", hsts)
        if not age or int(age.group(1)) < _HSTS_MIN_AGE or "includesubdomains" not in hsts.lower():
            problems.append("strict-transport-security missing or weaker than a year")
    return problems


def _judge_headers(response: Response, target: Target, what: str) -> Verdict:
    problems = _header_problems(response, target)
    if problems:
        return failed(f"{what} answered {response.status}: {'; '.join(problems)}")
    names = len(_REQUIRED) + 1 + (1 if target.https else 0)
    return passed(f"{what} answered {response.status} with all {names} headers")


def headers_on_2xx(target: Target, _: Settings) -> Verdict:
    response = request(target, "GET", "/livez")
    if not 200 <= response.status < 300:
        return failed(f"GET /livez answered {response.status}, not 2xx")
    return _judge_headers(response, target, "GET /livez")


def headers_on_4xx(target: Target, _: Settings) -> Verdict:
    path = _missing_path()
    response = request(target, "GET", path)
    if not 400 <= response.status < 500:
        return failed(f"GET {path} answered {response.status}, not 4xx")
    return _judge_headers(response, target, f"GET {path}")


def headers_on_5xx(target: Target, settings: Settings) -> Verdict:
    """A 5xx when one can be provoked from outside (``/readyz`` of an unready instance);
    otherwise the server's own refusal of an oversized head (431), the answer made
    farthest from the application's error handlers."""
    ready = request(target, "GET", "/readyz")
    if ready.status >= 500:
        return _judge_headers(ready, target, "GET /readyz")
    fields = tuple(
        (f"X-Keel-Report-{n}", "1") for n in range(settings.server.max_header_fields + 1)
    )
    refused = request(target, "GET", "/livez", fields)
    note = f"no 5xx can be provoked from outside (GET /readyz answered {ready.status}); "
    if refused.status != 431:
        return not_checked(
            f"{note}a head of KEEL_MAX_HEADER_FIELDS + 1 fields answered {refused.status}, "
            "not 431 (does the instance run with this environment?)"
        )
    verdict = _judge_headers(refused, target, "a head with too many fields")
    return Verdict(verdict.outcome, note + verdict.evidence)


def no_fingerprint_headers(target: Target, _: Settings) -> Verdict:
    seen = []
    for path in ("/livez", _missing_path()):
        response = request(target, "GET", path)
        seen += [f"{name} on {response.status}" for name in _FINGERPRINTS if response.has(name)]
    if seen:
        return failed("sent " + ", ".join(seen))
    return passed("no Server or X-Powered-By header on a 2xx and a 404")


def cors_refuses_foreign_origin(target: Target, settings: Settings) -> Verdict:
    origin = _FOREIGN_ORIGIN
    preflight = request(
        target,
        "OPTIONS",
        "/auth/login",
        (("Origin", origin), ("Access-Control-Request-Method", "POST")),
    )
    simple = request(target, "GET", "/livez", (("Origin", origin),))
    granted = [
        f"{what} answered with {name}"
        for what, response in (("the preflight", preflight), ("a GET", simple))
        for name in ("access-control-allow-origin", "access-control-allow-credentials")
        if response.has(name)
    ]
    if granted:
        return failed(f"Origin {origin}: " + "; ".join(granted))
    return passed(
        f"Origin {origin}: preflight answered {preflight.status} and GET {simple.status}, "
        "neither with Access-Control-Allow-Origin"
    )


def trace_refused(target: Target, _: Settings) -> Verdict:
    canary = secrets.token_hex(8)
    response = request(target, "TRACE", "/", (("X-Keel-Report-Canary", canary),))
    if canary.encode() in response.body:
        return failed(f"TRACE / answered {response.status} and echoed the request")
    if response.status < 400:
        return failed(f"TRACE / answered {response.status}")
    return passed(f"TRACE / answered {response.status} without echoing the request")


def _problem_issue(response: Response) -> str | None:
    content_type = response.header("content-type") or ""
    if not content_type.startswith("application/problem+json"):
        return f"{response.status} is {content_type or 'untyped'}, not application/problem+json"
    text = response.body.decode("utf-8", "replace")
    if _INTERNALS.search(text):
        return f"{response.status} body shows internals"
    try:
        body = json.loads(text)
    except ValueError:
        return f"{response.status} body is not JSON"
    if not isinstance(body, dict) or any(key not in body for key in _PROBLEM_FIELDS):
        return f"{response.status} body lacks one of {', '.join(_PROBLEM_FIELDS)}"
    if body["status"] != response.status:
        return f"{response.status} body says status {body['status']}"
    return None


def problems_without_internals(target: Target, _: Settings) -> Verdict:
    json_type = (("Content-Type", "application/json"),)
    samples = (
        request(target, "GET", _missing_path()),
        request(target, "TRACE", "/"),
        request(target, "POST", "/auth/login", json_type, b'{"email": '),
    )
    issues = [issue for issue in map(_problem_issue, samples) if issue]
    if issues:
        return failed("; ".join(issues))
    codes = ", ".join(
        f"{r.status} {json.loads(r.body).get('code')}" for r in samples if r.status >= 400
    )
    return passed(f"{codes}: problem+json with type, title, status, code and no internals")


def docs_not_exposed(target: Target, _: Settings) -> Verdict:
    answers = {path: request(target, "GET", path).status for path in _DOCS}
    served = [f"{path} answered {status}" for path, status in answers.items() if status < 400]
    if served:
        return failed(", ".join(served))
    return passed(", ".join(f"{path} {status}" for path, status in answers.items()))
