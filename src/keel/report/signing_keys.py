"""Signing-key claims: the current key's age, and the rotation's state.

The key file records when a key was staged and retired, not when the current
key started signing; ``keel keys promote`` records that in the audit trail
(``key_promoted``, target the key's ``kid``). So the age comes from there. A
key made by ``keel keys generate`` and never promoted has no recorded start:
its age is at least the time since the key file last changed, which refutes
a young key but never proves one.

- :data:`SIGNING_KEY_MAX_AGE`: a current key older than this fails (rotate
  with ``keel keys rotate`` then ``promote``).
- :data:`STAGED_KEY_MAX_WAIT`: a key staged longer than this and never
  promoted is a rotation left half-done (promotion needs only the JWKS cache
  lifetime, five minutes).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Final

from keel._clock import Clock
from keel.audit import Action, query_events
from keel.db import Database
from keel.report.claim import Verdict, failed, not_checked, passed
from keel.security.key_file import KeyConfigurationError, read_key_file
from keel.security.key_set import KeySet, retention
from keel.settings import Settings

__all__ = [
    "SIGNING_KEY_MAX_AGE",
    "STAGED_KEY_MAX_WAIT",
    "rotation_is_not_stalled",
    "signing_key_is_young",
]

SIGNING_KEY_MAX_AGE: Final = timedelta(days=90)
STAGED_KEY_MAX_WAIT: Final = timedelta(days=1)


def _days(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:.1f} days"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_file(settings: Settings) -> tuple[KeySet, datetime] | Verdict:
    tokens = settings.tokens
    if tokens.key_file is None:
        source = (
            "KEEL_JWT_PRIVATE_KEY"
            if tokens.private_key is not None
            else "KEEL_JWT_SECRET"
            if tokens.hmac_secret is not None
            else None
        )
        if source is None:
            return not_checked("no signing key is configured (KEEL_JWT_KEY_FILE is not set)")
        return not_checked(
            f"the signing key comes from {source}, which records no dates; "
            "a key file managed by `keel keys` does"
        )
    try:
        keys, _ = read_key_file(tokens.key_file)
        modified = datetime.fromtimestamp(os.stat(tokens.key_file).st_mtime, UTC)
    except (KeyConfigurationError, OSError) as exc:
        return failed(f"the key file (KEEL_JWT_KEY_FILE) cannot be used: {exc}")
    return keys, modified


async def signing_key_is_young(settings: Settings, database: Database, clock: Clock) -> Verdict:
    loaded = _key_file(settings)
    if isinstance(loaded, Verdict):
        return loaded
    keys, modified = loaded
    kid = keys.current.kid
    now = clock.now()
    async with database.unit_of_work() as uow:
        promoted = await query_events(
            uow, action=Action.KEY_PROMOTED, target_id=kid, descending=True, limit=1
        )
    if promoted:
        since = promoted[0].occurred_at
        age = now - since
        what = f"current key {kid} signs since {_stamp(since)} (audit seq {promoted[0].seq})"
        if age > SIGNING_KEY_MAX_AGE:
            return failed(f"{what}: {_days(age)} old, over {SIGNING_KEY_MAX_AGE.days} days")
        return passed(f"{what}: {_days(age)} old, under {SIGNING_KEY_MAX_AGE.days} days")
    unchanged = now - modified
    if unchanged > SIGNING_KEY_MAX_AGE:
        return failed(
            f"current key {kid} has no recorded promotion and the key file has not changed "
            f"for {_days(unchanged)}: the key is at least that old"
        )
    return not_checked(
        f"no promotion of the current key {kid} is recorded (`keel keys generate` records "
        "no date); `keel keys rotate` then `keel keys promote` record one"
    )


async def rotation_is_not_stalled(settings: Settings, clock: Clock) -> Verdict:
    loaded = _key_file(settings)
    if isinstance(loaded, Verdict):
        return loaded
    keys, _ = loaded
    now = clock.now()
    verifying = [
        r for r in keys.retired if now.timestamp() < r.dropped_at(retention(settings.tokens))
    ]
    state = f"current {keys.current.kid}; {len(verifying)} retired key(s) still verifying"
    if keys.next is None:
        return passed(f"{state}; no staged key")
    staged_at = datetime.fromtimestamp(keys.next.staged_at, UTC)
    waiting = now - staged_at
    staged = f"key {keys.next.key.kid} staged at {_stamp(staged_at)}"
    if waiting > STAGED_KEY_MAX_WAIT:
        return failed(
            f"{state}; {staged}, {_days(waiting)} ago, never promoted "
            f"(over {STAGED_KEY_MAX_WAIT.days} day): run `keel keys promote`"
        )
    return passed(f"{state}; {staged}, awaiting promotion")
