"""The notes service as its users and moderators use it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from keel.audit import keyring_from_settings, verify
from keel.db import Database, migrate
from keel.db.revision import schema_is_current
from notes.models import Note

from ._service import Service


async def test_a_user_creates_lists_reads_changes_and_deletes_their_notes(
    service: Service,
) -> None:
    ann = await service.user("ann@notes.example")
    created = await service.call("POST", "/notes", ann, json={"title": "Groceries", "body": "eggs"})
    assert created.status_code == 201, created.text
    note = created.json()
    assert (note["title"], note["body"]) == ("Groceries", "eggs")

    listed = await service.call("GET", "/notes", ann)
    assert [n["id"] for n in listed.json()["items"]] == [note["id"]]
    changed = await service.call("PATCH", f"/notes/{note['id']}", ann, json={"body": "milk"})
    assert changed.json()["body"] == "milk"
    # Any spelling of the id finds the same note.
    read = await service.call("GET", f"/notes/{note['id'].upper()}", ann)
    assert read.json()["body"] == "milk"

    assert (await service.call("DELETE", f"/notes/{note['id']}", ann)).status_code == 204
    gone = await service.call("GET", f"/notes/{note['id']}", ann)
    assert gone.status_code == 404
    assert gone.json()["code"] == "note_not_found"


async def test_sec_47_another_users_note_is_not_there_for_you(service: Service) -> None:
    ann = await service.user("ann@notes.example")
    bob = await service.user("bob@notes.example")
    note = (await service.call("POST", "/notes", ann, json={"title": "Mine"})).json()

    assert (await service.call("GET", "/notes", bob)).json() == {"items": []}
    for method, body in (("GET", None), ("PATCH", {"title": "Yours"}), ("DELETE", None)):
        response = await service.call(method, f"/notes/{note['id']}", bob, json=body)
        assert response.status_code == 404, (method, response.text)
        assert response.json()["code"] == "note_not_found"  # the same as a note that never was
    assert (await service.call("GET", f"/notes/{note['id']}", ann)).json()["title"] == "Mine"
    assert (await service.http.get("/notes")).status_code == 401


async def test_a_moderator_removes_anyones_note_and_the_chain_records_it(
    service: Service,
) -> None:
    await service.accounts.create_admin("root@notes.example", "correct horse battery staple 42")
    admin = await service.login("root@notes.example")
    ann = await service.user("ann@notes.example")
    mo = await service.user("mo@notes.example")
    note = (await service.call("POST", "/notes", ann, json={"title": "Spam"})).json()

    refused = await service.call("DELETE", f"/moderation/notes/{note['id']}", mo)
    assert refused.status_code == 403
    mo_id = (await service.call("GET", "/users/me", mo)).json()["id"]
    given = await service.call(
        "PATCH", f"/admin/users/{mo_id}", admin, json={"roles": ["user", "moderator"]}
    )
    assert given.status_code == 200, given.text
    mo = await service.login("mo@notes.example")  # a token issued with the role
    assert (await service.call("DELETE", f"/moderation/notes/{note['id']}", mo)).status_code == 204
    assert (await service.call("GET", f"/notes/{note['id']}", ann)).status_code == 404

    moderated = await service.call(
        "GET", "/admin/audit", admin, params={"action": "notes.note_moderated"}
    )
    (event,) = moderated.json()["items"]
    assert (event["actor_id"], event["target_id"]) == (mo_id, note["id"])
    created = await service.call(
        "GET", "/admin/audit", admin, params={"action": "notes.note_created"}
    )
    assert [e["target_id"] for e in created.json()["items"]] == [note["id"]]
    database: Database = service.app.state.keel.database
    result = await verify(database, keyring_from_settings(service.settings.audit))
    assert result.ok, result


async def test_the_migration_is_current_and_notes_go_with_their_owner(service: Service) -> None:
    database: Database = service.app.state.keel.database
    packages = service.settings.database.migration_packages
    assert schema_is_current(await database.current_revisions(), packages)
    diff = await asyncio.to_thread(migrate.schema_diff, service.settings.database)
    assert diff == []  # keel's models and the notes model match what the migrations built

    ann = await service.user("ann@notes.example")
    await service.call("POST", "/notes", ann, json={"title": "One"})
    body = {"password": "correct horse battery staple 42"}
    assert (await service.call("DELETE", "/users/me", ann, json=body)).status_code == 204
    async with database.unit_of_work() as uow:
        count = await uow.session.execute(select(func.count()).select_from(Note))
        assert count.scalar_one() == 0
