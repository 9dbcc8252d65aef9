"""The notes service's audit actions and its role, beside keel's own."""

from __future__ import annotations

from keel.accounts import Role
from keel.audit import AuditActions, app_action

__all__ = ["MODERATE_SCOPE", "MODERATOR", "NotesActions"]

#: The scope that lets a caller remove anyone's note.
MODERATE_SCOPE = "notes:moderate"
#: The role an admin gives to moderators (``PATCH /admin/users/{id}``).
MODERATOR = Role("moderator", frozenset({MODERATE_SCOPE}), "may remove anyone's notes")


class NotesActions(AuditActions, namespace="notes"):
    NOTE_CREATED = app_action("note_created")
    NOTE_DELETED = app_action("note_deleted")
    NOTE_MODERATED = app_action("note_moderated")
