"""VerifiedTokenCache: a signature is verified once per process; nothing else is remembered."""

from __future__ import annotations

import pytest

from keel._clock import FrozenClock
from keel.auth import SecurityState, TokenAuthenticator, VerifiedTokenCache
from keel.cache import LocalInvalidations, MemoryStore
from keel.security.tokens import AccessClaims, AccessTokens, InvalidToken
from tests.unit.auth._support import Directory, active


class Counting:
    """Counts the verifications that reach the real verifier."""

    def __init__(self, tokens: AccessTokens) -> None:
        self.tokens = tokens
        self.calls = 0

    def verify(self, token: str) -> AccessClaims:
        self.calls += 1
        return self.tokens.verify(token)


@pytest.fixture
def counting(tokens: AccessTokens) -> Counting:
    return Counting(tokens)


@pytest.fixture
def cache(counting: Counting, clock: FrozenClock) -> VerifiedTokenCache:
    return VerifiedTokenCache(counting, clock=clock, max_entries=3)


def test_a_token_is_verified_once(
    cache: VerifiedTokenCache, counting: Counting, tokens: AccessTokens
) -> None:
    issued = tokens.issue(subject="user-1", session_id="s", scopes=["user"])
    first = cache.verify(issued.token)
    for _ in range(5):
        assert cache.verify(issued.token) == first
    assert counting.calls == 1
    assert first.jti == issued.jti


def test_entries_end_at_exp_and_the_verifier_decides_the_leeway(
    cache: VerifiedTokenCache, counting: Counting, tokens: AccessTokens, clock: FrozenClock
) -> None:
    issued = tokens.issue(subject="user-1", session_id="s", scopes=[])
    cache.verify(issued.token)
    clock.advance(900 - 1)
    cache.verify(issued.token)
    assert counting.calls == 1
    clock.advance(1)  # at exp: no longer served from the cache
    cache.verify(issued.token)  # within the leeway: the verifier still accepts it...
    cache.verify(issued.token)
    assert counting.calls == 3  # ...but it is not remembered
    assert len(cache) == 0
    clock.advance(30)
    with pytest.raises(InvalidToken):
        cache.verify(issued.token)


def test_failures_are_never_remembered(
    cache: VerifiedTokenCache, counting: Counting, tokens: AccessTokens
) -> None:
    good = tokens.issue(subject="user-1", session_id="s", scopes=[]).token
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    for bad in (tampered, "a.b.c", "x" * 10_000, "é.é.é", None):
        for _ in range(2):
            with pytest.raises(InvalidToken):
                cache.verify(bad)  # type: ignore[arg-type]
    assert counting.calls == 10
    assert len(cache) == 0
    cache.verify(good)
    with pytest.raises(InvalidToken):
        cache.verify(tampered)  # a near-copy of a cached token is not confused with it


def test_the_cache_is_bounded_least_recently_used_first(
    cache: VerifiedTokenCache, counting: Counting, tokens: AccessTokens
) -> None:
    issued = [tokens.issue(subject="user-1", session_id="s", scopes=[]).token for _ in range(4)]
    for token in issued[:3]:
        cache.verify(token)
    cache.verify(issued[0])  # used again: now the most recent
    cache.verify(issued[3])  # evicts issued[1]
    assert len(cache) == 3
    calls = counting.calls
    cache.verify(issued[0])
    cache.verify(issued[2])
    assert counting.calls == calls
    cache.verify(issued[1])
    assert counting.calls == calls + 1


def test_the_raw_token_is_not_kept(cache: VerifiedTokenCache, tokens: AccessTokens) -> None:
    token = tokens.issue(subject="user-1", session_id="s", scopes=[]).token
    cache.verify(token)
    kept = repr(cache.__dict__)
    assert token.split(".")[2] not in kept


async def test_with_the_cache_state_and_sessions_still_apply_on_every_request(
    tokens: AccessTokens, directory: Directory, clock: FrozenClock, memory_store: MemoryStore
) -> None:
    state = SecurityState(
        memory_store,
        LocalInvalidations(),
        load_subject=directory.load,
        load_session=directory.session,
    )
    authenticator = TokenAuthenticator(VerifiedTokenCache(tokens, clock=clock), state)
    admin = tokens.issue(subject="admin-1", session_id="s", scopes=["user", "admin"])
    assert (await authenticator.authenticate(admin.token)).scopes == {"user", "admin"}
    directory.change("admin-1", active("user"))
    await state.subject_changed("admin-1")
    assert (await authenticator.authenticate(admin.token)).scopes == {"user"}
    directory.ended.add("s")
    await state.sessions_ended("admin-1", ["s"])
    with pytest.raises(InvalidToken):
        await authenticator.authenticate(admin.token)


def test_max_entries_must_be_positive(tokens: AccessTokens, clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        VerifiedTokenCache(tokens, clock=clock, max_entries=0)
