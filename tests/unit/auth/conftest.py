"""Fixtures for the keel.auth tests: keys, tokens, a test directory, and a store per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel._clock import FrozenClock
from keel.auth import SecurityState, TokenAuthenticator
from keel.cache import LocalInvalidations, MemoryStore, RedisStore, Store
from keel.security.keys import KeySet
from keel.security.tokens import AccessTokens
from tests.unit.auth._support import Directory, active, token_settings


@pytest.fixture
def keys() -> KeySet:
    return KeySet.generate("EdDSA")


@pytest.fixture
def tokens(keys: KeySet, clock: FrozenClock) -> AccessTokens:
    return AccessTokens(keys, token_settings(), clock=clock)


@pytest.fixture
def directory() -> Directory:
    return Directory({"user-1": active("user"), "admin-1": active("user", "admin")})


@pytest.fixture
async def memory_store(clock: FrozenClock) -> AsyncIterator[MemoryStore]:
    store = MemoryStore(clock)
    yield store
    await store.close()


@pytest.fixture
def security(store: Store, directory: Directory) -> SecurityState:
    """A ``SecurityState`` over ``store`` read directly (no near cache), as every worker of a
    machine reads the shared file."""
    return SecurityState(
        store, LocalInvalidations(), load_subject=directory.load, load_session=directory.session
    )


@pytest.fixture
def authenticator(tokens: AccessTokens, security: SecurityState) -> TokenAuthenticator:
    return TokenAuthenticator(tokens, security)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: FrozenClock) -> AsyncIterator[Store]:
    """The same tests over the in-process store and the real Redis (the shared backend)."""
    backend: Store
    if request.param == "memory":
        backend = MemoryStore(clock)
    else:
        url: str = request.getfixturevalue("redis_url")
        namespace: str = request.getfixturevalue("redis_namespace")
        backend = RedisStore(url, namespace=namespace, timeout=1.0)
    try:
        yield backend
    finally:
        await backend.close()
