"""The key lifecycle (stage, promote, retire, drop) and what each state verifies and signs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from jwt.algorithms import get_default_algorithms

from keel._clock import FrozenClock
from keel.security.key_rotation import (
    KeyEvent,
    KeyRotationRefused,
    Transition,
    emergency_rotate,
    promote,
    revoke,
    stage,
)
from keel.security.keys import (
    JWKS_MAX_AGE,
    MAX_PREVIOUS_KEYS,
    KeySet,
    RetiredKey,
    SigningKey,
    retention,
)
from keel.security.tokens import AccessTokens, InvalidToken
from keel.settings import TokenSettings
from tests.unit.auth._support import claims_for, forge, header_for, token_settings

LEEWAY = 30


def _settings(**changes: Any) -> TokenSettings:
    return dataclasses.replace(token_settings(leeway=LEEWAY), **changes)


def _now(clock: FrozenClock) -> int:
    return int(clock.now().timestamp())


def _signed_by(key: SigningKey, clock: FrozenClock, **claims: Any) -> str:
    algorithm = get_default_algorithms()[key.algorithm]
    return forge(
        header_for(key),
        claims_for(clock, **claims),
        lambda data: algorithm.sign(data, key.private_material),
    )


def _kid(token: str) -> str:
    import base64

    header = token.split(".")[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def _events(transition: Transition) -> list[tuple[KeyEvent, str]]:
    return [(change.event, change.kid) for change in transition.changes]


def _rotated(clock: FrozenClock, keep_for: int) -> tuple[KeySet, SigningKey]:
    """A set whose first key was retired at ``clock``'s time, and that first key."""
    keys = KeySet.generate()
    staged = stage(keys, _now(clock) - JWKS_MAX_AGE, keep_for=keep_for).keys
    return promote(staged, _now(clock), keep_for=keep_for).keys, keys.current


def test_the_staged_key_verifies_but_never_signs(clock: FrozenClock) -> None:
    keys = KeySet.generate()
    transition = stage(keys, _now(clock), keep_for=930)
    staged = transition.keys.next
    assert staged is not None
    assert _events(transition) == [(KeyEvent.STAGED, staged.key.kid)]
    tokens = AccessTokens(transition.keys, _settings(), clock=clock)
    issued = tokens.issue(subject="u", session_id="s", scopes=[])
    assert _kid(issued.token) == keys.current.kid
    assert tokens.verify(_signed_by(staged.key, clock)).subject == "user-1"


def test_a_retired_key_verifies_only_tokens_issued_before_its_retirement_plus_leeway(
    clock: FrozenClock,
) -> None:
    keys, retired = _rotated(clock, retention(_settings()))
    retired_at = _now(clock)
    tokens = AccessTokens(keys, _settings(), clock=clock)
    before = _signed_by(retired, clock, iat=retired_at - 60, exp=retired_at + 600)
    within_leeway = _signed_by(retired, clock, iat=retired_at + LEEWAY)
    clock.advance(LEEWAY + 1)
    after = _signed_by(retired, clock, sub="admin-1", scope="admin")
    assert tokens.verify(before).subject == "user-1"
    assert tokens.verify(within_leeway).subject == "user-1"
    with pytest.raises(InvalidToken):
        tokens.verify(after)
    with pytest.raises(InvalidToken):
        tokens.verify(_signed_by(retired, clock, iat=retired_at + LEEWAY + 1))
    assert tokens.verify(_signed_by(keys.current, clock)).subject == "user-1"


def test_a_retired_key_is_dropped_after_the_access_token_ttl_plus_leeway(
    clock: FrozenClock,
) -> None:
    settings = _settings(access_ttl=300)
    keys, retired = _rotated(clock, retention(settings))
    retired_at = _now(clock)
    tokens = AccessTokens(keys, settings, clock=clock)
    # Within the 900 s every verifier allows, so only the drop refuses it.
    long_lived = _signed_by(retired, clock, iat=retired_at - 10, exp=retired_at + 880)
    clock.advance(300 + LEEWAY - 1)
    assert tokens.verify(long_lived).subject == "user-1"
    assert retired.kid in [jwk["kid"] for jwk in keys.live(_now(clock), 330).jwks()["keys"]]
    clock.advance(1)
    with pytest.raises(InvalidToken):
        tokens.verify(long_lived)
    assert retired.kid not in [jwk["kid"] for jwk in keys.live(_now(clock), 330).jwks()["keys"]]


def test_promote_waits_for_the_jwks_cache_lifetime_unless_forced(clock: FrozenClock) -> None:
    staged = stage(KeySet.generate(), _now(clock), keep_for=930).keys
    clock.advance(JWKS_MAX_AGE - 1)
    with pytest.raises(KeyRotationRefused) as refused:
        promote(staged, _now(clock), keep_for=930)
    assert refused.value.code == "key_not_published_long_enough"
    assert "1 more seconds" in refused.value.message
    forced = promote(staged, _now(clock), keep_for=930, force=True)
    assert forced.changes[0].details == {"published_for": JWKS_MAX_AGE - 1, "forced": True}
    clock.advance(1)
    promoted = promote(staged, _now(clock), keep_for=930)
    assert staged.next is not None
    assert promoted.keys.current is staged.next.key
    assert promoted.keys.next is None
    assert promoted.keys.retired == (RetiredKey(staged.current, _now(clock)),)
    assert _events(promoted) == [
        (KeyEvent.PROMOTED, staged.next.key.kid),
        (KeyEvent.RETIRED, staged.current.kid),
    ]
    assert promoted.changes[1].details == {"dropped_at": _now(clock) + 930}


def test_steps_out_of_order_are_refused_with_stable_codes(clock: FrozenClock) -> None:
    keys = KeySet.generate()
    with pytest.raises(KeyRotationRefused) as refused:
        promote(keys, _now(clock), keep_for=930)
    assert refused.value.code == "no_staged_key"
    staged = stage(keys, _now(clock), keep_for=930).keys
    with pytest.raises(KeyRotationRefused) as refused:
        stage(staged, _now(clock), keep_for=930)
    assert refused.value.code == "key_already_staged"
    with pytest.raises(KeyRotationRefused) as refused:
        revoke(staged, staged.current.kid, _now(clock), keep_for=930)
    assert refused.value.code == "key_is_current"
    with pytest.raises(KeyRotationRefused) as refused:
        revoke(staged, "no-such-kid", _now(clock), keep_for=930)
    assert refused.value.code == "unknown_key"


def test_revoke_drops_a_staged_or_retired_key_at_once(clock: FrozenClock) -> None:
    keys, retired = _rotated(clock, 930)
    staged = stage(keys, _now(clock), keep_for=930).keys
    assert staged.next is not None
    without_retired = revoke(staged, retired.kid, _now(clock), keep_for=930)
    assert _events(without_retired) == [(KeyEvent.DROPPED, retired.kid)]
    assert without_retired.keys.find(retired.kid) is None
    assert without_retired.keys.next == staged.next
    tokens = AccessTokens(without_retired.keys, _settings(), clock=clock)
    with pytest.raises(InvalidToken):
        tokens.verify(_signed_by(retired, clock, iat=_now(clock) - 60))
    without_staged = revoke(staged, staged.next.key.kid, _now(clock), keep_for=930)
    assert without_staged.keys.next is None
    assert without_staged.keys.find(retired.kid) is retired


def test_an_emergency_rotation_drops_every_other_key(clock: FrozenClock) -> None:
    keys, _ = _rotated(clock, 930)
    staged = stage(keys, _now(clock), keep_for=930).keys
    transition = emergency_rotate(staged, _now(clock))
    assert len(transition.keys) == 1
    fresh = transition.keys.current
    assert transition.changes[0].event is KeyEvent.PROMOTED
    assert transition.changes[0].kid == fresh.kid
    assert {kid for event, kid in _events(transition)[1:] if event is KeyEvent.DROPPED} == set(
        staged.kids
    )
    tokens = AccessTokens(transition.keys, _settings(), clock=clock)
    for old in staged:
        with pytest.raises(InvalidToken):
            tokens.verify(_signed_by(old, clock, iat=_now(clock) - 60))


def test_every_step_removes_the_retired_keys_that_dropped_and_says_so(
    clock: FrozenClock,
) -> None:
    keys, retired = _rotated(clock, 930)
    clock.advance(930)
    transition = stage(keys, _now(clock), keep_for=930)
    assert _events(transition)[0] == (KeyEvent.DROPPED, retired.kid)
    assert transition.changes[0].details["reason"] == "expired"
    assert transition.keys.retired == ()


def test_promotion_keeps_at_most_the_maximum_of_retired_keys(clock: FrozenClock) -> None:
    keys = KeySet.generate()
    first = keys.current
    for _ in range(MAX_PREVIOUS_KEYS + 1):
        keys = stage(keys, _now(clock) - JWKS_MAX_AGE, keep_for=10_000).keys
        transition = promote(keys, _now(clock), keep_for=10_000)
        keys = transition.keys
    assert len(keys.retired) == MAX_PREVIOUS_KEYS
    assert (KeyEvent.DROPPED, first.kid) in _events(transition)
    assert keys.find(first.kid) is None
