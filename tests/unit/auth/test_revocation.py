"""The deny-list: one key per revoked token or session, living only as long as it must."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from keel._clock import FrozenClock
from keel.auth import (
    SESSION_REVOCATION_TTL,
    revoke_session,
    revoke_token,
    revoked_session_key,
    revoked_token_key,
)
from keel.cache import MemoryStore, Store
from keel.security.tokens import MAX_ACCESS_TTL, MAX_LEEWAY


async def test_revoke_token_lasts_until_the_token_can_no_longer_verify(
    store: Store, clock: FrozenClock
) -> None:
    await revoke_token(store, "jti-1", clock.now() + timedelta(seconds=300), clock=clock)
    assert await store.get(revoked_token_key("jti-1")) is not None
    remaining = await store.ttl(revoked_token_key("jti-1"))
    assert remaining is not None
    assert 300 < remaining <= 300 + MAX_LEEWAY


async def test_revoke_token_outlives_exp_by_the_leeway(
    memory_store: MemoryStore, clock: FrozenClock
) -> None:
    await revoke_token(memory_store, "jti-1", clock.now() + timedelta(seconds=10), clock=clock)
    clock.advance(10 + MAX_LEEWAY - 1)
    assert await memory_store.get(revoked_token_key("jti-1")) is not None
    clock.advance(1)
    assert await memory_store.get(revoked_token_key("jti-1")) is None


async def test_revoking_a_long_dead_token_writes_nothing(
    memory_store: MemoryStore, clock: FrozenClock
) -> None:
    expired = clock.now() - timedelta(seconds=MAX_LEEWAY)
    await revoke_token(memory_store, "jti-old", expired, clock=clock)
    assert await memory_store.get(revoked_token_key("jti-old")) is None


async def test_revoke_session_covers_every_access_token_by_default(store: Store) -> None:
    await revoke_session(store, "sid-1")
    assert await store.get(revoked_session_key("sid-1")) is not None
    remaining = await store.ttl(revoked_session_key("sid-1"))
    assert remaining is not None
    assert SESSION_REVOCATION_TTL == MAX_ACCESS_TTL + MAX_LEEWAY
    assert SESSION_REVOCATION_TTL - 5 < remaining <= SESSION_REVOCATION_TTL


async def test_revoke_session_with_an_explicit_ttl(store: Store) -> None:
    await revoke_session(store, "sid-2", ttl=30)
    remaining = await store.ttl(revoked_session_key("sid-2"))
    assert remaining is not None
    assert 25 < remaining <= 30


async def test_bad_arguments_are_refused(memory_store: MemoryStore, clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="jti"):
        await revoke_token(memory_store, "", clock.now(), clock=clock)
    with pytest.raises(ValueError, match="aware"):
        await revoke_token(memory_store, "j", datetime(2030, 1, 1), clock=clock)  # noqa: DTZ001
    with pytest.raises(ValueError, match="session_id"):
        await revoke_session(memory_store, "")
    with pytest.raises(ValueError, match="ttl"):
        await revoke_session(memory_store, "s", ttl=0)


def test_keys_are_namespaced_by_kind() -> None:
    assert revoked_token_key("abc") == "revoked:jti:abc"
    assert revoked_session_key("abc") == "revoked:sid:abc"
    assert revoked_token_key("abc") != revoked_session_key("abc")
