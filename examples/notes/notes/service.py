"""What the notes service does, and the audit record of each change, in one transaction.

Object-level authorization lives here, not in the routes: every read and
change of a note is scoped to its owner, so another user's note is
indistinguishable from one that does not exist (``NoteNotFound``, a 404,
SEC-47). Only moderation reaches across owners, and the route that calls it
requires the moderation scope.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from keel.accounts import Origin
from keel.audit import ActorType, AppAction, AuditTrail
from keel.db import Database, UnitOfWork
from keel.errors import NotFound
from notes.actions import NotesActions
from notes.models import Note

__all__ = ["NoteNotFound", "NoteView", "NotesService"]

_PAGE = 100


class NoteNotFound(NotFound):
    """No such note (or not yours)."""

    code = "note_not_found"


@dataclass(frozen=True, slots=True)
class NoteView:
    id: str
    title: str
    body: str
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, note: Note) -> NoteView:
        return cls(
            id=str(note.id),
            title=note.title,
            body=note.body,
            created_at=note.created_at.isoformat(),
            updated_at=note.updated_at.isoformat(),
        )


class NotesService:
    def __init__(self, database: Database, audit: AuditTrail) -> None:
        self._database = database
        self._audit = audit

    async def create(self, owner: str, title: str, body: str, origin: Origin) -> NoteView:
        async with self._database.unit_of_work() as uow:
            now = self._audit.clock.now()
            note = Note(
                id=uuid.uuid4(),
                owner_id=uuid.UUID(owner),
                title=title,
                body=body,
                created_at=now,
                updated_at=now,
            )
            uow.session.add(note)
            await uow.flush()
            await self._record(uow, NotesActions.NOTE_CREATED, owner, note, origin)
            return NoteView.of(note)

    async def list(self, owner: str) -> list[NoteView]:
        async with self._database.unit_of_work() as uow:
            rows = await uow.session.execute(
                select(Note)
                .where(Note.owner_id == uuid.UUID(owner))
                .order_by(Note.created_at, Note.id)
                .limit(_PAGE)
            )
            return [NoteView.of(note) for note in rows.scalars()]

    async def get(self, owner: str, note_id: str) -> NoteView:
        async with self._database.unit_of_work() as uow:
            return NoteView.of(await self._owned(uow, owner, note_id))

    async def update(
        self, owner: str, note_id: str, *, title: str | None, body: str | None
    ) -> NoteView:
        async with self._database.unit_of_work() as uow:
            note = await self._owned(uow, owner, note_id)
            if title is not None:
                note.title = title
            if body is not None:
                note.body = body
            note.updated_at = self._audit.clock.now()
            await uow.flush()
            return NoteView.of(note)

    async def delete(self, owner: str, note_id: str, origin: Origin) -> None:
        async with self._database.unit_of_work() as uow:
            note = await self._owned(uow, owner, note_id)
            await uow.session.delete(note)
            await self._record(uow, NotesActions.NOTE_DELETED, owner, note, origin)

    async def moderate(self, moderator: str, note_id: str, origin: Origin) -> None:
        """Remove anyone's note (the caller holds ``notes:moderate``)."""
        async with self._database.unit_of_work() as uow:
            note = await uow.session.get(Note, uuid.UUID(note_id))
            if note is None:
                raise NoteNotFound()
            await uow.session.delete(note)
            await self._record(
                uow,
                NotesActions.NOTE_MODERATED,
                moderator,
                note,
                origin,
                details={"owner_id": str(note.owner_id)},
            )

    async def _owned(self, uow: UnitOfWork, owner: str, note_id: str) -> Note:
        note = await uow.session.get(Note, uuid.UUID(note_id))
        if note is None or str(note.owner_id) != owner:
            raise NoteNotFound()  # someone else's note is not there for you (SEC-47)
        return note

    async def _record(
        self,
        uow: UnitOfWork,
        action: AppAction,
        actor: str,
        note: Note,
        origin: Origin,
        details: dict[str, str] | None = None,
    ) -> None:
        event = self._audit.event(
            action,
            actor_type=ActorType.USER,
            actor_id=actor,
            target_type="note",
            target_id=str(note.id),
            source_ip=origin.source_ip,
            user_agent=origin.user_agent,
            request_id=origin.request_id,
            details=details,
        )
        await self._audit.record(uow, event)
