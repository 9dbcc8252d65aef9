"""SEC-46: every non-public route denies by default. Walks every operation of the full app.

The app is ``create_app`` with the real ``BearerAuthenticator`` (which mounts
the accounts, session, JWKS and audit routes itself), plus the router of every
``build_<name>_router()`` in ``keel.api`` that needs no argument and whose
routes ``create_app`` does not serve. Every operation,
from the OpenAPI document and from the routing table (so
``include_in_schema=False`` cannot hide one), must:

- answer 401 with ``WWW-Authenticate: Bearer`` without credentials,
- answer 401 to a garbage bearer token,
- under ``/admin``, answer 403 to a valid token without the ``admin`` scope,

unless it is on the explicit public allowlist below. Adding a public route
means adding it here, in review.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute

import keel.api
from keel._clock import FrozenClock
from keel.api.principal import Principal, current_principal
from keel.db import migrate
from keel.settings import Settings
from tests._public_routes import PUBLIC_API_OPERATIONS, PUBLIC_PROBES_AND_DOCS
from tests.unit.auth._app import AuthApp, bearer, build_auth_app

from ._serve import serve_in_process

SettingsFactory = Callable[..., Settings]

#: (method, path) pairs anyone may call (tests/_public_routes.py: every entry is a decision).
PUBLIC: frozenset[tuple[str, str]] = PUBLIC_API_OPERATIONS | PUBLIC_PROBES_AND_DOCS
ADMIN_PREFIX = "/admin"
_PATH_PARAM = re.compile(r"\{[^}/]+\}")
_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"
Operation = tuple[str, str]


def keel_api_routers() -> list[APIRouter]:
    """The router of every argument-free ``build_<name>_router`` in ``keel.api`` (and below)."""
    found = []
    for info in pkgutil.walk_packages(keel.api.__path__, prefix="keel.api."):
        module = importlib.import_module(info.name)
        for name, builder in vars(module).items():
            if not (name.startswith("build_") and name.endswith("_router")):
                continue
            if getattr(builder, "__module__", None) != module.__name__ or not callable(builder):
                continue
            parameters = inspect.signature(builder).parameters.values()
            if all(p.default is not inspect.Parameter.empty for p in parameters):
                router = builder()
                assert isinstance(router, APIRouter), name
                found.append(router)
    return found


def _served(routes: Sequence[BaseRoute]) -> set[Operation]:
    # FastAPI ≥ 0.165 keeps included routers as lazy entries: resolve them the public way.
    return {
        (method, context.path)
        for context in iter_route_contexts(routes)
        if context.path is not None
        for method in context.methods or ()
    }


def mount_missing(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Include each router with an operation the app does not serve yet."""
    for router in routers:
        wanted = _served(router.routes)
        if wanted and not wanted <= _served(app.routes):
            app.include_router(router)


def operations(app: FastAPI, schema: dict[str, object]) -> tuple[set[Operation], list[str]]:
    """(method, path) of every OpenAPI operation and every route, documented or not.

    Also what cannot be walked (a mounted sub-application, a websocket): reported as findings.
    """
    found: set[Operation] = set()
    unwalkable: list[str] = []
    paths = schema.get("paths", {})
    assert isinstance(paths, dict)
    for path, item in paths.items():
        for method in item:
            if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}:
                found.add((method.upper(), path))
    for context in iter_route_contexts(app.routes):
        if context.path is None or not context.methods:
            unwalkable.append(f"{context.original_route!r}: cannot be walked")
            continue
        found.update((method, context.path) for method in context.methods)
    return found, unwalkable


async def unguarded_operations(
    client: httpx.AsyncClient, walked: Iterable[Operation], *, user_token: str
) -> list[str]:
    """What the walker reports: each non-public operation that does not deny by default."""
    findings = []
    for method, path in sorted(walked):
        if (method, path) in PUBLIC:
            continue
        url = _PATH_PARAM.sub(_PLACEHOLDER, path)
        anonymous = await client.request(method, url)
        if anonymous.status_code != 401:
            findings.append(f"{method} {path}: {anonymous.status_code} without credentials")
        elif anonymous.headers.get("www-authenticate") != "Bearer":
            findings.append(f"{method} {path}: 401 without a Bearer challenge")
        garbage = await client.request(method, url, headers=bearer("not.a.token"))
        if garbage.status_code != 401:
            findings.append(f"{method} {path}: {garbage.status_code} for a garbage token")
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            user = await client.request(method, url, headers=bearer(user_token))
            if user.status_code != 403:
                findings.append(f"{method} {path}: {user.status_code} for a non-admin token")
    return findings


async def walk(auth: AuthApp, settings: Settings) -> tuple[set[Operation], list[str]]:
    await asyncio.to_thread(migrate.upgrade, settings.database)
    async with serve_in_process(auth.app) as client:
        schema_response = await client.get("/openapi.json")
        assert schema_response.status_code == 200  # docs are on in development
        walked, findings = operations(auth.app, schema_response.json())
        findings += await unguarded_operations(client, walked, user_token=auth.token("user-1"))
    return walked, findings


def build(settings: Settings, clock: FrozenClock, extra: Sequence[APIRouter] = ()) -> AuthApp:
    auth = build_auth_app(settings, clock, routers=extra)
    mount_missing(auth.app, keel_api_routers())
    return auth


async def test_sec_46_every_non_public_operation_denies_by_default(
    settings_factory: SettingsFactory, clock: FrozenClock
) -> None:
    settings = settings_factory()
    walked, findings = await walk(build(settings, clock), settings)
    assert findings == []
    # The walk is not vacuous: it reached the guarded routes we know of.
    assert {("GET", "/admin/audit"), ("GET", "/_t/me")} <= walked
    assert ("GET", "/.well-known/jwks.json") in walked
    assert {("GET", "/users/me"), ("PATCH", "/users/me"), ("DELETE", "/users/me")} <= walked
    assert ("POST", "/auth/token") in walked


async def test_sec_46_the_walker_reports_an_unguarded_route(
    settings_factory: SettingsFactory, clock: FrozenClock
) -> None:
    careless = APIRouter()

    @careless.get("/reports/{report_id}")
    async def open_report(report_id: str) -> dict[str, str]:
        return {"report": report_id}

    @careless.delete("/_t/hidden", include_in_schema=False)
    async def hidden() -> None:
        return None

    @careless.get("/admin/leaky")
    async def leaky(principal: Annotated[Principal, Depends(current_principal)]) -> str:
        return principal.subject  # authenticated, but the admin scope is never checked

    settings = settings_factory()
    _, findings = await walk(build(settings, clock, [careless]), settings)
    assert findings == [
        "DELETE /_t/hidden: 200 without credentials",
        "DELETE /_t/hidden: 200 for a garbage token",
        "GET /admin/leaky: 200 for a non-admin token",
        "GET /reports/{report_id}: 200 without credentials",
        "GET /reports/{report_id}: 200 for a garbage token",
    ]


def test_discovery_finds_the_routers_keel_api_defines() -> None:
    paths = {context.path for r in keel_api_routers() for context in iter_route_contexts(r.routes)}
    assert {"/admin/audit", "/sessions"} <= paths


def test_the_walk_includes_the_routes_in_the_apps_own_table(
    settings_factory: SettingsFactory, clock: FrozenClock
) -> None:
    # /livez, /readyz and GET /users/me sit in the app's own table, not in a router.
    auth = build_auth_app(settings_factory(), clock)
    walked, _ = operations(auth.app, auth.app.openapi())
    assert {("GET", "/livez"), ("HEAD", "/readyz"), ("GET", "/users/me")} <= walked
