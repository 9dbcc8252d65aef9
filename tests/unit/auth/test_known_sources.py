"""Known login sources (SEC-13's exemption from the account lock): earned, and forgotten.

Over the memory store and real Redis, like the other throttle tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel._clock import FrozenClock
from keel.auth import LoginThrottle
from keel.cache import MemoryStore, Store
from tests.unit.cache._counting import CountingStore

from ._throttle import ACCOUNT, OWNER_IP, SETTINGS, refusal, stranger


@pytest.fixture
def throttle(store: Store, clock: FrozenClock) -> LoginThrottle:
    return LoginThrottle(store, SETTINGS, clock=clock)


async def _lock(throttle: LoginThrottle) -> None:
    for n in range(1, SETTINGS.account_failures + 1):
        await throttle.failed(ACCOUNT, stranger(n))
    assert await refusal(throttle, stranger(99)) == "account"


async def test_forgetting_makes_every_known_source_a_stranger_until_its_next_login(
    throttle: LoginThrottle, clock: FrozenClock
) -> None:
    await throttle.succeeded(ACCOUNT, OWNER_IP)
    clock.advance(1)
    await throttle.forget_known_sources(ACCOUNT)
    await _lock(throttle)
    assert await refusal(throttle, OWNER_IP) == "account"
    clock.advance(1)
    await throttle.succeeded(ACCOUNT, OWNER_IP)  # a login with the new password
    await _lock(throttle)
    assert await refusal(throttle, OWNER_IP) is None


async def test_a_login_that_remembers_no_source_still_resets_the_count(
    throttle: LoginThrottle,
) -> None:
    await _lock(throttle)
    await throttle.succeeded(ACCOUNT, OWNER_IP, remember_source=False)
    assert await refusal(throttle, stranger(99)) is None  # the lock and the count are gone
    await _lock(throttle)
    assert await refusal(throttle, OWNER_IP) == "account"  # but the source is not known


async def test_a_source_remembered_by_an_older_version_is_known_until_forgotten(
    store: Store, throttle: LoginThrottle, clock: FrozenClock
) -> None:
    # Older versions stored b"1" for a known source.
    await store.set(throttle._known_key(ACCOUNT, OWNER_IP), b"1", ttl=3600)
    await _lock(throttle)
    assert await refusal(throttle, OWNER_IP) is None
    await throttle.forget_known_sources(ACCOUNT)
    assert await refusal(throttle, OWNER_IP) == "account"


@pytest.fixture
async def counting(clock: FrozenClock) -> AsyncIterator[CountingStore]:
    store = CountingStore(MemoryStore(clock))
    yield store
    await store.close()


async def test_forgetting_is_one_write_and_a_check_stays_one_read(
    counting: CountingStore, clock: FrozenClock
) -> None:
    throttle = LoginThrottle(counting, SETTINGS, clock=clock)
    await throttle.forget_known_sources(ACCOUNT)
    assert counting.take() == ["set"]
    await throttle.check(ACCOUNT, OWNER_IP)
    assert counting.take() == ["get_many"]
    for key in counting.keys:
        assert ACCOUNT not in key
        assert OWNER_IP not in key
