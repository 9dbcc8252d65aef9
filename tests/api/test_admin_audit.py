"""GET /admin/audit: admin-only, read-only, paginated, and itself audited (SEC-69)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from keel.api.app import create_app
from keel.audit import Action, ActorType, AuditActions, Result, app_action
from keel.db import migrate
from keel.settings import Settings

from ._serve import HeaderAuthenticator, serve_in_process

SettingsFactory = Callable[..., Settings]
ADMIN = {"x-test-user": "root-admin admin"}
USER = {"x-test-user": "plain-user"}


@pytest.fixture
async def client(settings_factory: SettingsFactory) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_factory()
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings, authenticator=HeaderAuthenticator())
    trail = app.state.keel.audit
    async with serve_in_process(app) as http:
        for n in range(5):
            await trail.record_alone(
                trail.event(
                    Action.AUTHN_LOGIN_FAIL if n % 2 else Action.USER_CREATED,
                    Result.FAILURE if n % 2 else Result.SUCCESS,
                    actor_type=ActorType.USER,
                    actor_id=f"user-{n}",
                    target_type="user",
                    target_id=f"user-{n}",
                    source_ip="192.0.2.7",
                )
            )
        yield http


async def test_sec_69_anonymous_401_and_user_403(client: httpx.AsyncClient) -> None:
    anonymous = await client.get("/admin/audit")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    forbidden = await client.get("/admin/audit", headers=USER)
    assert forbidden.status_code == 403
    assert "items" not in forbidden.text
    denied = await client.get("/admin/audit", headers=ADMIN, params={"action": "authz_fail"})
    [record] = denied.json()["items"]
    assert record["actor_id"] == "plain-user"
    assert record["result"] == "failure"
    assert record["target_id"] == "/admin/audit"
    assert record["request_id"] == forbidden.headers["x-request-id"]


async def test_sec_69_reading_is_itself_audited(client: httpx.AsyncClient) -> None:
    first = await client.get("/admin/audit", headers=ADMIN)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    assert [item["seq"] for item in first.json()["items"]] == [1, 2, 3, 4, 5]
    second = await client.get("/admin/audit", headers=ADMIN, params={"action": "authz_admin"})
    reads = second.json()["items"]
    assert len(reads) == 1
    read = reads[0]
    assert read["actor_id"] == "root-admin"
    assert read["details"]["operation"] == "audit_read"
    assert read["details"]["returned"] == 5
    assert read["request_id"] == first.headers["x-request-id"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "POST"])
async def test_sec_69_the_trail_is_read_only(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/admin/audit", headers=ADMIN)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


async def test_filters_and_cursor_pagination(client: httpx.AsyncClient) -> None:
    failures = await client.get(
        "/admin/audit", headers=ADMIN, params={"result": "failure", "action": "authn_login_fail"}
    )
    assert [i["actor_id"] for i in failures.json()["items"]] == ["user-1", "user-3"]
    page = await client.get("/admin/audit", headers=ADMIN, params={"limit": 2})
    body = page.json()
    assert [i["seq"] for i in body["items"]] == [1, 2]
    assert body["next_cursor"] == 2
    rest = await client.get(
        "/admin/audit", headers=ADMIN, params={"limit": 2, "cursor": body["next_cursor"]}
    )
    assert [i["seq"] for i in rest.json()["items"]] == [3, 4]
    newest = await client.get("/admin/audit", headers=ADMIN, params={"order": "desc", "limit": 1})
    assert newest.json()["items"][0]["action"] == "authz_admin"
    by_target = await client.get(
        "/admin/audit", headers=ADMIN, params={"target_type": "user", "target_id": "user-4"}
    )
    assert [i["seq"] for i in by_target.json()["items"]] == [5]


@pytest.mark.parametrize(
    "params",
    [
        {"action": "not_an_action"},
        {"limit": "0"},
        {"limit": "100000"},
        {"since": "2026-01-01T00:00:00"},  # naive: refused
        {"order": "sideways"},
        {"cursor": "-1"},
    ],
)
async def test_bad_filters_are_422_without_echo(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/admin/audit", headers=ADMIN, params=params)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"
    for value in params.values():
        if len(value) > 3:
            assert value not in response.text


class NotesActions(AuditActions, namespace="notes"):
    NOTE_CREATED = app_action("note_created")


async def test_the_audit_filter_takes_keels_actions_and_the_applications(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory()
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings, authenticator=HeaderAuthenticator(), audit_actions=[NotesActions])
    trail = app.state.keel.audit
    async with serve_in_process(app) as http:
        for action in (NotesActions.NOTE_CREATED, Action.USER_CREATED):
            await trail.record_alone(trail.event(action, Result.SUCCESS))
        notes = await http.get("/admin/audit?action=notes.note_created", headers=ADMIN)
        assert [e["action"] for e in notes.json()["items"]] == ["notes.note_created"]
        keels = await http.get("/admin/audit?action=user_created", headers=ADMIN)
        assert [e["action"] for e in keels.json()["items"]] == ["user_created"]
        for unknown in ("notes.note_deleted", "user_creatd"):
            refused = await http.get(f"/admin/audit?action={unknown}", headers=ADMIN)
            assert refused.status_code == 422
            assert refused.json()["code"] == "validation_failed"
