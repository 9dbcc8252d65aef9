"""An application's own audit actions, in keel's chain beside keel's vocabulary.

keel's ``Action`` vocabulary stays closed: a plain string that is not one of
its names is refused when an ``AuditEvent`` is built. An application declares
its actions under a namespace of its own, and only those declared objects
are accepted::

    class NotesActions(AuditActions, namespace="notes"):
        NOTE_CREATED = app_action("note_created")
        NOTE_DELETED = app_action("note_deleted")

    AuditEvent(action=NotesActions.NOTE_CREATED, ...)  # stored as "notes.note_created"

A misspelt attribute is a type error (and an ``AttributeError``), not a new
action in the chain. Namespaced names always contain one dot and keel's own
never do, so the two cannot collide. The chain, ``keel audit verify`` and the
exports treat both alike; ``GET /admin/audit`` filters by either once the
application hands its classes to ``create_app(audit_actions=...)``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final

__all__ = ["ACTION_MAX", "AppAction", "AuditActions", "app_action", "is_app_action_name"]

#: The stored action column's width.
ACTION_MAX: Final = 64
_PART = r"[a-z][a-z0-9_]*"
_NAMESPACE = re.compile(_PART)
_QUALIFIED = re.compile(rf"{_PART}\.{_PART}")


class AppAction(str):
    """An application's action, ``namespace.name``; made by :class:`AuditActions` subclasses."""

    __slots__ = ()

    @property
    def namespace(self) -> str:
        return self.partition(".")[0]


def app_action(name: str) -> AppAction:
    """Declare an action of an :class:`AuditActions` subclass (its namespace is added there)."""
    if not _NAMESPACE.fullmatch(name):
        raise ValueError(f"audit action {name!r}: lower-case letters, digits and '_' only")
    return AppAction(name)


def is_app_action_name(text: str) -> bool:
    """Whether ``text`` has the form of an application action (``namespace.name``)."""
    return len(text) <= ACTION_MAX and _QUALIFIED.fullmatch(text) is not None


class AuditActions:
    """Base of an application's action declarations; see the module docstring."""

    namespace: ClassVar[str] = ""

    def __init_subclass__(cls, *, namespace: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not _NAMESPACE.fullmatch(namespace) or namespace == "keel":
            raise ValueError(f"audit namespace {namespace!r}: lower-case, not 'keel'")
        cls.namespace = namespace
        for attribute, value in list(vars(cls).items()):
            if isinstance(value, AppAction):
                if "." in value:
                    raise ValueError(f"{cls.__name__}.{attribute}: declared with app_action()")
                qualified = AppAction(f"{namespace}.{value}")
                if len(qualified) > ACTION_MAX:
                    raise ValueError(f"{qualified!r} is longer than {ACTION_MAX} characters")
                setattr(cls, attribute, qualified)

    @classmethod
    def members(cls) -> frozenset[AppAction]:
        """Every action the class declares."""
        return frozenset(v for v in vars(cls).values() if isinstance(v, AppAction))
