"""Whether accounts, sessions and the audit trail tell the same story (after a crash).

Every change keel makes is committed with its audit event in one transaction,
so whatever a crash interrupts, the rows and the events must still match one
for one. ``problems`` reads everything back through the typed tables (the same
values on SQLite and PostgreSQL) and lists every mismatch:

- every account has exactly one successful ``user_created`` event, and every
  such event its account;
- every session has exactly one ``authn_login_success`` naming it, and every
  such event its session;
- a session at generation ``g`` holds refresh tokens 0..g, only the last one
  unrotated, and has one ``session_renewed`` event per rotation;
- no session, refresh token or pending link outlives what it belongs to;
- every ended session is accounted for by the event that ended it: its own
  (a logout, a reuse, an expiry), or one ending all of a user's sessions that
  counts it (a password change or reset, a disable, an admin's revocation, a
  re-registration); an ending no event accounts for is a mismatch too;
- an account changed since its creation has the events that changed it: a
  disabled one its ``user_updated``, its roles those of its last
  ``authz_change``, and a touched row (``updated_at``) at least one such event.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.sql.expression import Executable

from keel.accounts.models import EmailVerificationToken, PasswordResetToken, User
from keel.accounts.roles import parse_roles
from keel.audit.models import events_table
from keel.auth.models import AuthSession, RefreshTokenRow
from keel.db import Database

__all__ = ["Event", "problems"]

# How each way of ending a user's sessions at once records how many it ended, per reason:
# (action, its details' "via", the count's field).
_BULK_ENDINGS = {
    "password_change": ("authn_password_change", "change", "sessions_revoked"),
    "password_reset": ("authn_password_change", "reset", "sessions_revoked"),
    "disabled": ("user_updated", "admin", "sessions_revoked"),
    "revoked_by_admin": ("authn_token_revoked", "admin", "sessions"),
    "reregistered": ("user_created", "register", "sessions_revoked"),
}
# Endings of one session, each recorded by one event about that session.
_SESSION_ENDINGS = {
    "logout": "session_logout",
    "revoked_by_user": "session_logout",
    "token_reuse": "authn_token_reuse",
    "expired": "session_expired",
}
# Events that change an account's row after its creation.
_ROW_CHANGES = frozenset({"authn_password_change", "user_updated", "authz_change"})


@dataclass(frozen=True)
class Event:
    seq: int
    action: str
    result: str
    target_id: str | None
    details: dict[str, Any]

    @property
    def target(self) -> uuid.UUID | None:
        return uuid.UUID(self.target_id) if self.target_id else None


def _id(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def _read(database: Database) -> dict[str, list[Any]]:
    queries: dict[str, Executable] = {
        "users": select(User.id, User.is_active, User.roles, User.created_at, User.updated_at),
        "sessions": select(
            AuthSession.id, AuthSession.user_id, AuthSession.revoked_reason, AuthSession.generation
        ),
        "refresh": select(
            RefreshTokenRow.session_id,
            RefreshTokenRow.generation,
            RefreshTokenRow.rotated_at.is_(None),
        ),
        "links": select(EmailVerificationToken.user_id).union_all(
            select(PasswordResetToken.user_id)
        ),
        "events": select(
            events_table.c.seq,
            events_table.c.action,
            events_table.c.result,
            events_table.c.target_id,
            events_table.c.details,
        ).order_by(events_table.c.seq),
    }
    async with database.engine.connect() as conn:
        return {name: list(await conn.execute(query)) for name, query in queries.items()}


async def problems(database: Database) -> list[str]:
    """Every mismatch between the rows and their audit events (empty when they agree)."""
    data = await _read(database)
    events = [Event(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in data["events"]]
    succeeded = [e for e in events if e.result == "success"]
    users = {_id(r[0]): r for r in data["users"]}
    sessions = {_id(r[0]): (_id(r[1]), r[2]) for r in data["sessions"]}
    generations = {_id(r[0]): int(r[3]) for r in data["sessions"]}
    found: list[str] = []

    created = Counter(e.target for e in succeeded if e.action == "user_created")
    found += [f"account {u} has {created[u]} user_created events" for u in users if created[u] != 1]
    found += [f"user_created for {u}, which does not exist" for u in created if u not in users]

    logins = Counter(
        _id(e.details["session_id"])
        for e in succeeded
        if e.action == "authn_login_success" and "session_id" in e.details
    )
    found += [f"session {s} has {logins[s]} login events" for s in sessions if logins[s] != 1]
    found += [
        f"login event for session {s}, which does not exist" for s in logins if s not in sessions
    ]
    refreshed = {_id(r[0]) for r in data["refresh"]}
    found += _rotations(events, generations, data["refresh"])

    found += [f"session {s} of no account" for s, (u, _) in sessions.items() if u not in users]
    found += [f"refresh token of no session ({s})" for s in refreshed if s not in sessions]
    found += [
        f"pending link of no account ({u})" for r in data["links"] if (u := _id(r[0])) not in users
    ]

    found += _endings(events, sessions)

    by_user: dict[uuid.UUID, list[Event]] = defaultdict(list)
    for e in succeeded:
        if e.action in _ROW_CHANGES and e.target is not None:
            by_user[e.target].append(e)
    for user, (_, active, roles, created_at, updated_at) in users.items():
        changes = by_user[user]
        disabled = any(
            e.action == "user_updated" and e.details.get("active") is False for e in changes
        )
        if (not active) != disabled:
            found.append(f"account {user}: active={active}, a disable event: {disabled}")
        # The roles it was created with, or those its last role change gave it.
        given = [e for e in succeeded if e.target == user and e.action == "user_created"]
        given += [e for e in changes if e.action == "authz_change"]
        if given and set(given[-1].details["roles"]) != parse_roles(roles):
            found.append(f"account {user}: roles {roles!r}, last given in {given[-1]}")
        if (updated_at != created_at) != bool(changes):
            found.append(
                f"account {user}: row changed {updated_at != created_at}, events {changes}"
            )
    return found


def _rotations(
    events: list[Event], generations: dict[uuid.UUID, int], tokens: list[Any]
) -> list[str]:
    """Each session's refresh tokens are generations 0..g, only g unrotated, and each
    rotation has its ``session_renewed`` event (``g`` being the session's generation)."""
    found: list[str] = []
    held: dict[uuid.UUID, list[tuple[int, bool]]] = defaultdict(list)
    for session, generation, live in tokens:
        held[_id(session)].append((int(generation), bool(live)))
    renewals: dict[uuid.UUID, list[int]] = defaultdict(list)
    for e in events:
        if e.action == "session_renewed" and e.result == "success" and e.target is not None:
            renewals[e.target].append(int(e.details["generation"]))
    for session, generation in generations.items():
        expected = [(g, g == generation) for g in range(generation + 1)]
        if sorted(held[session]) != expected:
            found.append(f"session {session} at {generation}: refresh tokens {held[session]}")
        if sorted(renewals[session]) != list(range(1, generation + 1)):
            found.append(f"session {session} at {generation}: renewals {renewals[session]}")
    found += [
        f"renewal of session {s}, which does not exist" for s in renewals if s not in generations
    ]
    return found


def _endings(
    events: list[Event], sessions: dict[uuid.UUID, tuple[uuid.UUID, str | None]]
) -> list[str]:
    """Every ended session is accounted for by the event of what ended it."""
    found: list[str] = []
    ended: Counter[tuple[uuid.UUID, str]] = Counter()
    for session, (user, reason) in sessions.items():
        if reason in _SESSION_ENDINGS:
            action = _SESSION_ENDINGS[reason]
            told = [e for e in events if e.action == action and e.target == session]
            if len(told) != 1:
                found.append(f"session {session} ended ({reason}) with {len(told)} {action}")
        elif reason in _BULK_ENDINGS:
            ended[(user, reason)] += 1
        elif reason is not None:
            found.append(f"session {session} ended ({reason}) with no event to account for it")
    recorded: Counter[tuple[uuid.UUID, str]] = Counter()
    for reason, (action, via, field) in _BULK_ENDINGS.items():
        for e in events:
            if e.action == action and e.details.get("via") == via and field in e.details:
                recorded[(e.target or uuid.UUID(int=0), reason)] += int(e.details[field])
    for key in ended.keys() | recorded.keys():
        if ended[key] != recorded[key]:
            found.append(f"{key}: {ended[key]} sessions ended, {recorded[key]} in the events")
    return found
