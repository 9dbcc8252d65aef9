"""``/openapi.json`` is the contract: every problem each operation can answer, and the limits the
server enforces, read from the same settings the server uses. SQLite, in process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from keel.accounts import Role
from keel.accounts.email import EMAIL_MAX_LENGTH
from keel.api.app import create_app
from keel.api.contract import BEARER_SCHEME, EDGE_STATUSES, PROBLEM_CODES, operations
from keel.api.problems import PROBLEM_MEDIA_TYPE
from keel.audit import Action
from keel.db import migrate
from keel.settings import Settings
from tests._public_routes import PUBLIC_API_OPERATIONS

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
JSON_BODY_STATUSES = {413, 415, 422}
# Every operation but these checks an access token (tests/_public_routes.py, SEC-46).
PUBLIC = PUBLIC_API_OPERATIONS


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    return Settings(
        database_url=sqlite_url,
        redis_url=None,
        password_min_length=20,
        password_max_length=200,
        enumeration_floor=0,
        failed_login_floor=0,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings, roles=[Role("moderator", frozenset({"notes:moderate"}))])


@asynccontextmanager
async def _serving(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    await asyncio.to_thread(migrate.upgrade, settings.database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.fixture
async def http(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with _serving(app, settings) as client:
        yield client


@pytest.fixture
async def document(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _body_schema(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation = document["paths"][path][method.lower()]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def test_the_problem_component_lists_every_stable_code(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert problem["properties"]["code"]["enum"] == sorted(PROBLEM_CODES)
    assert set(problem["required"]) == {"type", "title", "status", "code", "request_id"}
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_error_status_of_every_operation_is_a_documented_problem(
    document: dict[str, Any],
) -> None:
    seen = 0
    for method, path, operation in operations(document):
        seen += 1
        responses = operation["responses"]
        label = f"{method} {path}"
        assert set(EDGE_STATUSES) <= {int(status) for status in responses}, label
        for status, response in responses.items():
            if int(status) < 400:
                continue
            content = response["content"]
            assert content[PROBLEM_MEDIA_TYPE]["schema"] == PROBLEM_REF, (label, status)
            others = set(content) - {PROBLEM_MEDIA_TYPE}
            # RFC 6749 §5.2 errors are JSON objects of their own, on /auth/token's 400 only.
            oauth_error = (label, status) == ("POST /auth/token", "400")
            assert others == ({"application/json"} if oauth_error else set()), (label, status)
        body = operation.get("requestBody", {}).get("content", {})
        if "application/json" in body:
            assert {int(status) for status in responses} >= JSON_BODY_STATUSES, label
        if (method, path) in PUBLIC:
            assert "security" not in operation, label
        else:
            assert operation["security"] == [{BEARER_SCHEME: []}], label
            assert {401, 403} <= {int(status) for status in responses}, label
            assert "WWW-Authenticate" in responses["401"]["headers"], label
        if "429" in responses:
            assert "Retry-After" in responses["429"]["headers"], label
    assert seen >= 19


def test_request_limits_are_the_settings_the_server_checks(document: dict[str, Any]) -> None:
    register = _body_schema(document, "POST", "/auth/register")["properties"]
    assert register["password"]["minLength"] == 20
    assert register["password"]["maxLength"] == 200
    assert register["email"]["maxLength"] == EMAIL_MAX_LENGTH
    assert register["email"]["format"] == "email"
    login = _body_schema(document, "POST", "/auth/login")["properties"]
    assert "minLength" not in login["password"] or login["password"]["minLength"] == 1
    assert login["password"]["maxLength"] == 200
    for path in ("/auth/password/change", "/auth/password/reset"):
        new = _body_schema(document, "POST", path)["properties"]["new_password"]
        assert (new["minLength"], new["maxLength"]) == (20, 200), path
    serialized = str(document)
    assert "x-keel-limit" not in serialized


def test_the_application_s_roles_and_audit_actions_are_the_enums(
    document: dict[str, Any],
) -> None:
    update = _body_schema(document, "PATCH", "/admin/users/{user_id}")
    role = update["properties"]["roles"]["anyOf"][0]["items"]
    assert role["enum"] == ["admin", "moderator", "user"]
    audit = document["paths"]["/admin/audit"]["get"]
    action = next(p for p in audit["parameters"] if p["name"] == "action")
    values = action["schema"]["enum"]
    assert set(values) == {str(a) for a in Action}


@pytest.mark.parametrize(
    ("length", "code"), [(19, "password_too_short"), (201, "password_too_long")]
)
async def test_passwords_just_outside_the_declared_lengths_are_refused(
    http: httpx.AsyncClient, length: int, code: str
) -> None:
    password = ("lantern quietly " * 20)[:length]
    response = await http.post(
        "/auth/register", json={"email": f"p{length}@keel.example", "password": password}
    )
    assert response.status_code == 422
    assert response.json()["code"] == code


@pytest.mark.parametrize("length", [20, 200])
async def test_passwords_at_the_declared_lengths_are_accepted(
    http: httpx.AsyncClient, length: int
) -> None:
    password = ("lantern quietly " * 20)[: length - 1] + "!"
    response = await http.post(
        "/auth/register", json={"email": f"p{length}@keel.example", "password": password}
    )
    assert response.status_code == 202, response.text


async def test_405_and_options_list_every_documented_method_of_the_path(
    http: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    for path, item in document["paths"].items():
        concrete = path.replace("{user_id}", "00000000-0000-4000-8000-000000000000").replace(
            "{session_id}", "00000000-0000-4000-8000-000000000000"
        )
        documented = {method.upper() for method in item}
        for method in ("OPTIONS", "PUT", "TRACE"):
            if method in documented:
                continue
            response = await http.request(method, concrete)
            assert response.status_code == 405, (method, path)
            assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
            assert response.json()["code"] == "method_not_allowed"
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == documented, (method, path)


def test_the_document_is_built_once(app: FastAPI) -> None:
    first: Callable[[], dict[str, Any]] = app.openapi
    assert first() is first()
