"""The rotation lifecycle: stage a key, promote it, retire the old one, drop keys.

Each function takes a :class:`KeySet` and the time, and returns the new set
with the :class:`KeyChange`\\ s that make it (for the audit trail); nothing here
touches a file. ``keel keys`` applies them to the key file.

- :func:`stage` (``keel keys rotate``): a new key in state *next*, published
  and verifying, not signing.
- :func:`promote` (``keel keys promote``): the staged key signs, the current
  key is retired. Refused (``key_not_published_long_enough``) until the staged
  key has been in the file for :data:`~keel.security.key_set.JWKS_MAX_AGE`
  seconds, the JWKS cache lifetime, unless forced.
- :func:`emergency_rotate` (``keel keys rotate --emergency``): a new key signs
  at once and every other key is dropped, so tokens they signed are refused.
- :func:`revoke` (``keel keys revoke KID``): drop one staged or retired key.

Every transition also drops the retired keys whose retention has passed (they
verify nothing any more; this removes them from the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from keel._types import JSONValue
from keel.errors import KeelError
from keel.security.key_set import JWKS_MAX_AGE, MAX_PREVIOUS_KEYS, KeySet, RetiredKey, StagedKey
from keel.security.signing_key import SigningKey

__all__ = [
    "KeyChange",
    "KeyEvent",
    "KeyRotationRefused",
    "Transition",
    "emergency_rotate",
    "promote",
    "revoke",
    "stage",
]


class KeyRotationRefused(KeelError):
    """The key file does not allow this step now; ``code`` says why."""

    code: ClassVar[str] = "key_rotation_refused"


class KeyEvent(StrEnum):
    STAGED = "staged"
    PROMOTED = "promoted"
    RETIRED = "retired"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class KeyChange:
    """One key changing state: what happened to which ``kid``, and the particulars."""

    event: KeyEvent
    kid: str
    details: dict[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    """The key set after a step, and the changes that made it (in order)."""

    keys: KeySet
    changes: tuple[KeyChange, ...]


def _expired(keys: KeySet, now: int, keep_for: int) -> tuple[list[RetiredKey], list[KeyChange]]:
    kept: list[RetiredKey] = []
    dropped: list[KeyChange] = []
    for retired in keys.retired:
        if now < retired.dropped_at(keep_for):
            kept.append(retired)
        else:
            details: dict[str, JSONValue] = {"reason": "expired", "retired_at": retired.retired_at}
            dropped.append(KeyChange(KeyEvent.DROPPED, retired.key.kid, details))
    return kept, dropped


def stage(keys: KeySet, now: int, *, keep_for: int) -> Transition:
    """A new key of the same algorithm in state *next*; refused if one is staged already."""
    if keys.next is not None:
        raise KeyRotationRefused(
            f"key {keys.next.key.kid} is already staged: promote it (keel keys promote) "
            "or drop it (keel keys revoke KID) first",
            code="key_already_staged",
        )
    retired, changes = _expired(keys, now, keep_for)
    staged = StagedKey(SigningKey.generate(keys.algorithm), now)
    details: dict[str, JSONValue] = {"promotable_at": now + JWKS_MAX_AGE}
    changes.append(KeyChange(KeyEvent.STAGED, staged.key.kid, details))
    return Transition(KeySet(keys.current, retired, next=staged), tuple(changes))


def promote(keys: KeySet, now: int, *, keep_for: int, force: bool = False) -> Transition:
    """The staged key signs and the current one retires (see the module docstring)."""
    staged = keys.next
    if staged is None:
        raise KeyRotationRefused(
            "no key is staged: run keel keys rotate first", code="no_staged_key"
        )
    published_for = now - staged.staged_at
    if published_for < JWKS_MAX_AGE and not force:
        raise KeyRotationRefused(
            f"key {staged.key.kid} has been published for {max(published_for, 0)} s, less than "
            f"the JWKS cache lifetime ({JWKS_MAX_AGE} s): promote it after "
            f"{JWKS_MAX_AGE - published_for} more seconds, once every instance has reloaded "
            "the key file (--force only in an emergency)",
            code="key_not_published_long_enough",
        )
    retired, changes = _expired(keys, now, keep_for)
    retired.insert(0, RetiredKey(keys.current, now))
    while len(retired) > MAX_PREVIOUS_KEYS:
        oldest = retired.pop()
        details: dict[str, JSONValue] = {"reason": "limit", "retired_at": oldest.retired_at}
        changes.append(KeyChange(KeyEvent.DROPPED, oldest.key.kid, details))
    promoted: dict[str, JSONValue] = {"published_for": published_for, "forced": force}
    changes.append(KeyChange(KeyEvent.PROMOTED, staged.key.kid, promoted))
    changes.append(KeyChange(KeyEvent.RETIRED, keys.current.kid, {"dropped_at": now + keep_for}))
    return Transition(KeySet(staged.key, retired), tuple(changes))


def emergency_rotate(keys: KeySet, now: int) -> Transition:
    """A new key signs at once; every other key (current, staged, retired) is dropped."""
    fresh = SigningKey.generate(keys.algorithm)
    changes = [KeyChange(KeyEvent.PROMOTED, fresh.kid, {"emergency": True})]
    changes.extend(KeyChange(KeyEvent.DROPPED, key.kid, {"reason": "emergency"}) for key in keys)
    return Transition(KeySet(fresh), tuple(changes))


def revoke(keys: KeySet, kid: str, now: int, *, keep_for: int) -> Transition:
    """Drop the staged or retired key ``kid`` now; the current key is refused."""
    if kid == keys.current.kid:
        raise KeyRotationRefused(
            "that is the current signing key: replace it with keel keys rotate --emergency",
            code="key_is_current",
        )
    if keys.find(kid) is None:
        raise KeyRotationRefused("the key file holds no key with that kid", code="unknown_key")
    retired, changes = _expired(keys, now, keep_for)
    if any(change.kid == kid for change in changes):
        return Transition(KeySet(keys.current, retired, next=keys.next), tuple(changes))
    staged = None if keys.next is None or keys.next.key.kid == kid else keys.next
    kept = [r for r in retired if r.key.kid != kid]
    changes.append(KeyChange(KeyEvent.DROPPED, kid, {"reason": "revoked"}))
    return Transition(KeySet(keys.current, kept, next=staged), tuple(changes))
