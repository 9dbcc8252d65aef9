"""The factory ``keel serve --factory notes.app:create`` runs in every worker."""

from __future__ import annotations

from fastapi import FastAPI

from keel.api.app import create_app
from keel.api.state import AppContext
from keel.settings import Settings
from notes.actions import MODERATOR, NotesActions
from notes.api import build_notes_router
from notes.service import NotesService

__all__ = ["create"]


def _notes(context: AppContext) -> NotesService:
    return NotesService(context.database, context.audit)


def create(settings: Settings) -> FastAPI:
    """keel's app with the notes routes, service, audit actions and moderator role."""
    return create_app(
        settings,
        routers=[build_notes_router()],
        services=[_notes],
        audit_actions=[NotesActions],
        roles=[MODERATOR],
    )
