"""Redis down, memory fallback: what token authentication still guarantees (private redis-server).

The trade-off (documented in keel.auth.revocation): while Redis is down each
process answers from its own memory. What holds, and is tested here:

- good tokens keep working (no 401/503 storm because a cache went away);
- subject state comes from the database on a memory miss, so a subject
  disabled (or demoted, or logged out everywhere) before or during the outage
  is refused by every process as soon as its memory entry is loaded; a
  publish during the outage is seen at once by the process that made it;
- a revocation made during the outage is refused by the process that made it.

What does not hold: a jti/sid revoked in Redis before the outage is not seen
during it, and one revoked in memory during it is not copied to Redis after.
Those tokens stay bounded by their ``exp`` (≤ 15 min) and by the sessions
side's durable record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel._clock import FrozenClock
from keel.auth import SubjectState, TokenAuthenticator, publish_subject_state, revoke_token
from keel.cache import FallbackStore, MemoryStore, RedisStore
from keel.security.tokens import AccessTokens, InvalidToken
from tests.unit.auth._support import Directory, active
from tests.unit.cache._servers import RedisServer


@pytest.fixture
async def store(private_redis: RedisServer, clock: FrozenClock) -> AsyncIterator[FallbackStore]:
    fallback = FallbackStore(
        RedisStore(private_redis.url, namespace="auth-test:", timeout=0.25),
        MemoryStore(clock),
        clock,
        retry_interval=1.0,
    )
    try:
        yield fallback
    finally:
        await fallback.close()


async def test_good_tokens_keep_working_through_an_outage(
    store: FallbackStore,
    private_redis: RedisServer,
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    directory: Directory,
) -> None:
    token = tokens.issue(subject="user-1", session_id="s", scopes=["user"]).token
    await authenticator.authenticate(token, store)
    private_redis.kill()
    for _ in range(3):
        assert (await authenticator.authenticate(token, store)).scopes == {"user"}
    assert store.status == "degraded"
    # One load fills the process's memory; after that the database is left alone again.
    assert directory.loads == 2


async def test_a_subject_disabled_before_the_outage_stays_refused_during_it(
    store: FallbackStore,
    private_redis: RedisServer,
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    directory: Directory,
    clock: FrozenClock,
) -> None:
    token = tokens.issue(subject="user-1", session_id="s", scopes=["user"]).token
    await authenticator.authenticate(token, store)
    disabled = SubjectState(False, clock.now(), frozenset({"user"}))
    directory.states["user-1"] = disabled  # committed...
    await publish_subject_state(store, "user-1", disabled)  # ...and published, to Redis
    private_redis.kill()
    with pytest.raises(InvalidToken):
        await authenticator.authenticate(token, store)  # from the database, not from Redis


async def test_changes_during_the_outage_are_enforced_by_the_process_that_made_them(
    store: FallbackStore,
    private_redis: RedisServer,
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    clock: FrozenClock,
) -> None:
    admin = tokens.issue(subject="admin-1", session_id="s-admin", scopes=["user", "admin"])
    user = tokens.issue(subject="user-1", session_id="s-user", scopes=["user"])
    private_redis.kill()
    assert (await authenticator.authenticate(admin.token, store)).scopes == {"user", "admin"}
    await authenticator.authenticate(user.token, store)

    await publish_subject_state(store, "admin-1", active("user"))  # demoted during the outage
    assert (await authenticator.authenticate(admin.token, store)).scopes == {"user"}
    await revoke_token(store, user.jti, user.expires_at, clock=clock)  # logged out during it
    with pytest.raises(InvalidToken):
        await authenticator.authenticate(user.token, store)
    assert store.status == "degraded"
