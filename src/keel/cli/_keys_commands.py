"""``keel keys rotate|promote|revoke``: key-file steps that are audited.

Each step reads the key file, works out the new key set (refusals, with their
stable codes, come before anything is written), then, in one database unit of
work, records one audit event per key that changes state (``key_staged``,
``key_promoted``, ``key_retired``, ``key_dropped``), replaces the key file
atomically, and commits. If the commit fails the old file is put back, so the
file and the audit trail never disagree. Settings come from the environment
(``DATABASE_URL``, ``KEEL_AUDIT_KEY``, ``KEEL_ACCESS_TOKEN_TTL``...), as for
``keel audit``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from keel._clock import SystemClock
from keel.audit import Action, ActorType, AuditEvent, Result, keyring_from_settings, record
from keel.cli._audit_commands import _operator, _run
from keel.cli._output import out, settings_or_exit
from keel.db import Database
from keel.security.key_file import read_key_file, serialise, write_key_bytes
from keel.security.key_rotation import (
    KeyChange,
    KeyEvent,
    KeyRotationRefused,
    Transition,
    emergency_rotate,
    promote,
    revoke,
    stage,
)
from keel.security.key_set import KeySet, retention

__all__ = ["promote_key", "revoke_key", "rotate_keys"]

_ACTIONS = {
    KeyEvent.STAGED: Action.KEY_STAGED,
    KeyEvent.PROMOTED: Action.KEY_PROMOTED,
    KeyEvent.RETIRED: Action.KEY_RETIRED,
    KeyEvent.DROPPED: Action.KEY_DROPPED,
}

Step = Callable[[KeySet, int, int], Transition]


def rotate_keys(args: argparse.Namespace) -> int:
    if args.emergency:
        return _apply(args.file, lambda keys, now, _: emergency_rotate(keys, now))
    return _apply(args.file, lambda keys, now, keep_for: stage(keys, now, keep_for=keep_for))


def promote_key(args: argparse.Namespace) -> int:
    return _apply(
        args.file,
        lambda keys, now, keep_for: promote(keys, now, keep_for=keep_for, force=args.force),
    )


def revoke_key(args: argparse.Namespace) -> int:
    return _apply(
        args.file, lambda keys, now, keep_for: revoke(keys, args.kid, now, keep_for=keep_for)
    )


def _event(change: KeyChange, at: datetime, actor: str, key_file: str) -> AuditEvent:
    return AuditEvent(
        action=_ACTIONS[change.event],
        result=Result.SUCCESS,
        occurred_at=at,
        actor_type=ActorType.SYSTEM,
        actor_id=actor,
        target_type="signing_key",
        target_id=change.kid,
        details={**change.details, "key_file": key_file},
    )


def _apply(path: str, step: Step) -> int:
    keys, before = read_key_file(path)
    settings = settings_or_exit()
    at = SystemClock().now().astimezone(UTC)
    transition = step(keys, int(at.timestamp()), retention(settings.tokens))
    after = serialise(transition.keys)
    actor = _operator()
    key_file = Path(path).name

    async def work(database: Database) -> int:
        keyring = keyring_from_settings(settings.audit)
        written = False
        try:
            async with database.unit_of_work() as uow:
                for change in transition.changes:
                    await record(uow, _event(change, at, actor, key_file), keyring)
                if (await asyncio.to_thread(read_key_file, path))[1] != before:
                    raise KeyRotationRefused(
                        "the key file changed while this step ran: run it again",
                        code="key_file_changed",
                    )
                await asyncio.to_thread(write_key_bytes, path, after)
                written = True
        except BaseException:
            if written:  # the commit failed: the file goes back to what the trail says
                await asyncio.shield(asyncio.to_thread(write_key_bytes, path, before))
            raise
        for change in transition.changes:
            out(f"{_ACTIONS[change.event].value} {change.kid}")
        return 0

    return _run(settings, work)
