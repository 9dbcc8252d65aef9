"""The notes routes: a user's own notes, and moderation for holders of ``notes:moderate``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from keel.api.ids import canonical_uuid
from keel.api.origin import origin_of
from keel.api.principal import Principal, require_scope
from keel.api.services import service
from notes.actions import MODERATE_SCOPE
from notes.models import BODY_MAX, TITLE_MAX
from notes.service import NoteNotFound, NotesService

__all__ = ["build_notes_router"]

User = Annotated[Principal, Depends(require_scope("user"))]
Moderator = Annotated[Principal, Depends(require_scope(MODERATE_SCOPE))]
Notes = Annotated[NotesService, Depends(service(NotesService))]
Title = Annotated[str, Field(min_length=1, max_length=TITLE_MAX)]
Body = Annotated[str, Field(max_length=BODY_MAX)]


class NewNote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title
    body: Body = ""


class NoteChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title | None = None
    body: Body | None = None


def _note_id(note_id: str) -> str:
    """The path's note id, canonical; anything that is no UUID is simply not found."""
    canonical = canonical_uuid(note_id)
    if canonical is None:
        raise NoteNotFound()
    return canonical


def build_notes_router() -> APIRouter:
    """A fresh router with the notes routes (the service comes from the app's services)."""
    router = APIRouter(tags=["notes"])

    @router.post("/notes", status_code=201)
    async def create_note(
        request: Request, user: User, notes: Notes, body: NewNote
    ) -> dict[str, Any]:
        view = await notes.create(user.subject, body.title, body.body, origin_of(request))
        return asdict(view)

    @router.get("/notes")
    async def list_notes(user: User, notes: Notes) -> dict[str, Any]:
        return {"items": [asdict(view) for view in await notes.list(user.subject)]}

    @router.get("/notes/{note_id}")
    async def read_note(user: User, notes: Notes, note_id: str) -> dict[str, Any]:
        return asdict(await notes.get(user.subject, _note_id(note_id)))

    @router.patch("/notes/{note_id}")
    async def change_note(
        user: User, notes: Notes, note_id: str, body: NoteChange
    ) -> dict[str, Any]:
        view = await notes.update(user.subject, _note_id(note_id), title=body.title, body=body.body)
        return asdict(view)

    @router.delete("/notes/{note_id}", status_code=204)
    async def delete_note(request: Request, user: User, notes: Notes, note_id: str) -> Response:
        await notes.delete(user.subject, _note_id(note_id), origin_of(request))
        return Response(status_code=204)

    @router.delete("/moderation/notes/{note_id}", status_code=204)
    async def moderate_note(
        request: Request, moderator: Moderator, notes: Notes, note_id: str
    ) -> Response:
        await notes.moderate(moderator.subject, _note_id(note_id), origin_of(request))
        return Response(status_code=204)

    return router
