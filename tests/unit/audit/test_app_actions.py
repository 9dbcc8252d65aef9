"""Application audit actions: declared under a namespace, accepted beside keel's; typos refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keel.audit import Action, AppAction, AuditActions, AuditEvent, Result, app_action

NOW = datetime(2026, 12, 7, tzinfo=UTC)


class NotesActions(AuditActions, namespace="notes"):
    NOTE_CREATED = app_action("note_created")
    NOTE_DELETED = app_action("note_deleted")


def test_declared_actions_are_namespaced_and_listed() -> None:
    assert NotesActions.NOTE_CREATED == "notes.note_created"
    assert isinstance(NotesActions.NOTE_CREATED, AppAction)
    assert NotesActions.NOTE_CREATED.namespace == "notes"
    assert NotesActions.members() == {"notes.note_created", "notes.note_deleted"}


def test_an_event_takes_keels_actions_and_declared_ones() -> None:
    assert AuditEvent(Action.USER_CREATED, Result.SUCCESS, NOW).action == "user_created"
    event = AuditEvent(NotesActions.NOTE_DELETED, Result.SUCCESS, NOW)
    assert event.action == "notes.note_deleted"


@pytest.mark.parametrize("action", ["user_creatd", "notes.note_created", "notes.anything"])
def test_a_plain_string_outside_keels_vocabulary_is_refused(action: str) -> None:
    with pytest.raises(ValueError, match="is not a valid Action"):
        AuditEvent(action, Result.SUCCESS, NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("namespace", ["keel", "Notes", "no-dash", ""])
def test_a_bad_namespace_is_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="audit namespace"):

        class Bad(AuditActions, namespace=namespace):
            X = app_action("x")


def test_a_bad_or_overlong_name_is_refused() -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        app_action("Note.Created")
    with pytest.raises(ValueError, match="longer than 64"):

        class Long(AuditActions, namespace="n" * 30):
            X = app_action("x" * 40)
