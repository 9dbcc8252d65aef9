"""An application's actions in keel's chain: sealed, verified and filtered like keel's own."""

from __future__ import annotations

from keel.audit import AuditActions, app_action, query_events, record_many, verify
from keel.db import Database

from ._support import KEYRING, event


class NotesActions(AuditActions, namespace="notes"):
    NOTE_CREATED = app_action("note_created")


async def test_an_application_action_is_chained_verified_and_found(
    audit_database: Database,
) -> None:
    async with audit_database.unit_of_work() as uow:
        await record_many(
            uow, [event(1), event(2, action=NotesActions.NOTE_CREATED), event(3)], KEYRING
        )
    result = await verify(audit_database, KEYRING)
    assert result.ok, result
    assert result.count == 3
    async with audit_database.unit_of_work() as uow:
        found = await query_events(uow, action=NotesActions.NOTE_CREATED)
    assert [(r.seq, r.action) for r in found] == [(2, "notes.note_created")]
