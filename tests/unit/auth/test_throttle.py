"""Brute-force and rate limits (SEC-13, SEC-14, SEC-15) over the memory store and real Redis.

The clock is frozen at a whole minute, so windows start at 0 s elapsed; the
limits read the frozen wall clock, so advancing it moves windows and ends
locks on Redis too (only the expiry of the failure count is left to the store,
and is tested on memory).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from keel._clock import FrozenClock
from keel.accounts.hooks import LoginGuard
from keel.auth import LoginThrottle, RateLimiter
from keel.cache import MemoryStore, RedisStore, Store
from keel.errors import CacheUnavailable, TooManyRequests
from tests.unit.cache._counting import CountingStore

from ._throttle import ACCOUNT, OWNER_IP, SETTINGS, refusal, stranger


@pytest.fixture
def throttle(store: Store, clock: FrozenClock) -> LoginThrottle:
    return LoginThrottle(store, SETTINGS, clock=clock)


def test_login_throttle_is_the_accounts_login_guard(memory_store: MemoryStore) -> None:
    # Checked by mypy: the accounts side takes a LoginThrottle without importing keel.auth.
    guard: LoginGuard = LoginThrottle(memory_store, SETTINGS, clock=FrozenClock())
    assert callable(guard.reserve)


@pytest.fixture
def limiter(store: Store, clock: FrozenClock) -> RateLimiter:
    return RateLimiter(store, SETTINGS, clock=clock)


# SEC-13: per-account consecutive failures, independent of the source IP.


async def test_sec_13_failures_spread_over_ips_lock_the_account(
    throttle: LoginThrottle, clock: FrozenClock
) -> None:
    for n in range(1, 11):
        await throttle.check(ACCOUNT, stranger(n))
        assert await throttle.failed(ACCOUNT, stranger(n)) == n
    # The 11th attempt, from yet another IP, is refused before any password is looked at.
    with pytest.raises(TooManyRequests) as refused:
        await throttle.check(ACCOUNT, stranger(11))
    assert refused.value.limit == "account"
    assert refused.value.retry_after == 30
    clock.advance(29)
    assert await refusal(throttle, stranger(11)) == "account"
    clock.advance(1)
    await throttle.check(ACCOUNT, stranger(11))
    # A success resets the count: the next failure is the first again.
    await throttle.succeeded(ACCOUNT, stranger(11))
    assert await throttle.failed(ACCOUNT, stranger(12)) == 1
    await throttle.check(ACCOUNT, stranger(13))


async def test_sec_13_below_the_threshold_nothing_waits(throttle: LoginThrottle) -> None:
    for n in range(9):
        await throttle.failed(ACCOUNT, stranger(n))
    await throttle.check(ACCOUNT, stranger(99))
    assert throttle.delay_after(9) == 0


async def test_sec_13_each_failure_past_the_threshold_doubles_the_wait(
    throttle: LoginThrottle, clock: FrozenClock
) -> None:
    for n in range(10):
        await throttle.failed(ACCOUNT, stranger(n))
    waits = []
    for n in range(10, 13):
        clock.advance(throttle.delay_after(n))  # the previous lock has just ended
        await throttle.check(ACCOUNT, stranger(n))
        await throttle.failed(ACCOUNT, stranger(n))
        with pytest.raises(TooManyRequests) as refused:
            await throttle.check(ACCOUNT, stranger(50))
        waits.append(refused.value.retry_after)
    assert waits == [60, 120, 240]


async def test_sec_13_owner_known_source_not_locked_out(throttle: LoginThrottle) -> None:
    await throttle.succeeded(ACCOUNT, OWNER_IP)
    for n in range(30):
        await throttle.failed(ACCOUNT, stranger(n % 5))
    # The owner's usual place still gets to try its password...
    await throttle.check(ACCOUNT, OWNER_IP)
    # ...while every other source, used before or not, waits.
    assert await refusal(throttle, stranger(0)) == "account"
    assert await refusal(throttle, stranger(77)) == "account"
    assert await refusal(throttle, None) == "account"


async def test_sec_13_known_source_still_has_the_account_ip_limit(
    throttle: LoginThrottle, clock: FrozenClock
) -> None:
    await throttle.succeeded(ACCOUNT, OWNER_IP)
    for _ in range(19):
        await throttle.failed(ACCOUNT, OWNER_IP)
    await throttle.check(ACCOUNT, OWNER_IP)
    await throttle.failed(ACCOUNT, OWNER_IP)
    with pytest.raises(TooManyRequests) as refused:
        await throttle.check(ACCOUNT, OWNER_IP)
    # 20 failures in this window: not before the next, and then only once the weighted
    # count has room again (20 * (1 - f) + 1 <= 20, f >= 1/20: 3 s into it).
    assert refused.value.limit == "account_ip"
    assert refused.value.retry_after == 63
    clock.advance(62)
    assert await refusal(throttle, OWNER_IP) == "account_ip"
    clock.advance(1)
    await throttle.check(ACCOUNT, OWNER_IP)


async def test_sec_13_account_ip_limit_is_per_pair(store: Store, clock: FrozenClock) -> None:
    throttle = LoginThrottle(store, replace(SETTINGS, account_ip_limit=5), clock=clock)
    for _ in range(5):
        await throttle.failed(ACCOUNT, stranger(1))
    assert await refusal(throttle, stranger(1)) == "account_ip"
    await throttle.check(ACCOUNT, stranger(2))
    await throttle.check("someone-else@example.com", stranger(1))


async def test_sec_13_existing_and_unknown_accounts_get_the_same_answers(
    throttle: LoginThrottle,
) -> None:
    outcomes = []
    for account in ("victim@example.com", "nobody-has-this@example.com"):
        counts = [await throttle.failed(account, stranger(n)) for n in range(10)]
        outcomes.append((counts, await refusal(throttle, stranger(11), account)))
    assert outcomes[0] == outcomes[1]


async def test_sec_13_failure_count_forgotten_after_its_window(
    memory_store: MemoryStore, clock: FrozenClock
) -> None:
    throttle = LoginThrottle(memory_store, SETTINGS, clock=clock)
    for n in range(9):
        await throttle.failed(ACCOUNT, stranger(n))
    clock.advance(SETTINGS.account_failure_window)
    assert await throttle.failed(ACCOUNT, stranger(1)) == 1


# SEC-15: a lock never lasts, and a completed reset ends it.


async def test_sec_15_lock_is_temporary(throttle: LoginThrottle, clock: FrozenClock) -> None:
    for n in range(100):
        await throttle.failed(ACCOUNT, stranger(n))
    with pytest.raises(TooManyRequests) as refused:
        await throttle.check(ACCOUNT, stranger(251))
    assert refused.value.retry_after == SETTINGS.account_max_delay
    clock.advance(SETTINGS.account_max_delay)
    await throttle.check(ACCOUNT, stranger(251))


async def test_sec_15_clear_ends_the_lock_and_the_count(throttle: LoginThrottle) -> None:
    for n in range(12):
        await throttle.failed(ACCOUNT, stranger(n))
    assert await refusal(throttle, stranger(20)) == "account"
    await throttle.clear(ACCOUNT)
    await throttle.check(ACCOUNT, stranger(20))
    assert await throttle.failed(ACCOUNT, stranger(20)) == 1


# SEC-14: per-IP and global sliding windows.


async def test_sec_14_sixty_attempts_from_one_ip_are_refused(
    limiter: RateLimiter, clock: FrozenClock
) -> None:
    refused: list[TooManyRequests] = []
    for _ in range(60):
        clock.advance(0.5)
        try:
            await limiter.hit(OWNER_IP)
        except TooManyRequests as exc:
            refused.append(exc)
    assert len(refused) == 10
    assert {exc.limit for exc in refused} == {"ip"}
    assert all(exc.retry_after >= 1 for exc in refused)
    # Another client is not affected.
    await limiter.hit(stranger(1))


async def test_sec_14_retry_after_is_when_the_window_has_room(
    limiter: RateLimiter, clock: FrozenClock
) -> None:
    for _ in range(50):
        await limiter.hit(OWNER_IP)
    with pytest.raises(TooManyRequests) as refused:
        await limiter.hit(OWNER_IP)
    # Refused attempts are not counted, so knocking on does not push the time back.
    for _ in range(20):
        with pytest.raises(TooManyRequests):
            await limiter.hit(OWNER_IP)
    wait = refused.value.retry_after
    assert 60 < wait <= 62
    clock.advance(wait - 1)
    with pytest.raises(TooManyRequests):
        await limiter.hit(OWNER_IP)
    clock.advance(1)
    await limiter.hit(OWNER_IP)


async def test_sec_14_window_slides(limiter: RateLimiter, clock: FrozenClock) -> None:
    clock.advance(30)
    for _ in range(50):
        await limiter.hit(OWNER_IP)
    # 40 s later the last window still weighs 50 * (1 - 10/60) = 41.7: 8 more fit, not 50.
    clock.advance(40)
    for _ in range(8):
        await limiter.hit(OWNER_IP)
    with pytest.raises(TooManyRequests):
        await limiter.hit(OWNER_IP)


async def test_sec_14_global_ceiling(store: Store, clock: FrozenClock) -> None:
    limiter = RateLimiter(store, replace(SETTINGS, global_limit=5), clock=clock)
    for n in range(5):
        await limiter.hit(stranger(n))
    with pytest.raises(TooManyRequests) as refused:
        await limiter.hit(stranger(99))
    assert refused.value.limit == "global"
    assert refused.value.retry_after >= 1


async def test_sec_14_concurrent_attempts_never_overshoot(limiter: RateLimiter) -> None:
    async def attempt() -> bool:
        try:
            await limiter.hit(OWNER_IP)
        except TooManyRequests:
            return False
        return True

    results = await asyncio.gather(*(attempt() for _ in range(60)))
    assert sum(results) == 50


async def test_sec_14_one_audit_worthy_refusal_per_bucket_and_window(
    limiter: RateLimiter, clock: FrozenClock
) -> None:
    assert await limiter.first_refusal("ip", OWNER_IP)
    assert not await limiter.first_refusal("ip", OWNER_IP)
    assert await limiter.first_refusal("ip", stranger(1))
    assert await limiter.first_refusal("global", OWNER_IP)
    assert not await limiter.first_refusal("global", stranger(1))
    clock.advance(SETTINGS.window)
    assert await limiter.first_refusal("ip", OWNER_IP)


# Shared by every worker and instance; off when disabled; never silent on store errors.


async def test_sec_13_redis_counts_are_shared_between_instances(
    redis_url: str, redis_namespace: str, clock: FrozenClock
) -> None:
    first = RedisStore(redis_url, namespace=redis_namespace, timeout=1.0)
    second = RedisStore(redis_url, namespace=redis_namespace, timeout=1.0)
    try:
        worker_a = LoginThrottle(first, SETTINGS, clock=clock)
        worker_b = LoginThrottle(second, SETTINGS, clock=clock)
        for n in range(10):
            worker = worker_a if n % 2 else worker_b
            assert await worker.failed(ACCOUNT, stranger(n)) == n + 1
        assert await refusal(worker_a, stranger(20)) == "account"
        assert await refusal(worker_b, stranger(20)) == "account"
        await worker_a.succeeded(ACCOUNT, OWNER_IP)
        assert await worker_b.failed(ACCOUNT, stranger(1)) == 1

        limits = replace(SETTINGS, ip_limit=4)
        limiter_a = RateLimiter(first, limits, clock=clock)
        limiter_b = RateLimiter(second, limits, clock=clock)
        for n in range(4):
            await (limiter_a if n % 2 else limiter_b).hit(OWNER_IP)
        for limiter in (limiter_a, limiter_b):
            with pytest.raises(TooManyRequests):
                await limiter.hit(OWNER_IP)
    finally:
        await first.close()
        await second.close()


@pytest.fixture
async def counting(clock: FrozenClock) -> AsyncIterator[CountingStore]:
    store = CountingStore(MemoryStore(clock))
    yield store
    await store.close()


async def test_sec_13_keys_hold_no_address_and_calls_are_few(
    counting: CountingStore, clock: FrozenClock
) -> None:
    throttle = LoginThrottle(counting, SETTINGS, clock=clock)
    await throttle.check(ACCOUNT, OWNER_IP)
    assert counting.take() == ["get_many"]
    assert await throttle.failed(ACCOUNT, OWNER_IP) == 1
    assert sorted(counting.take()) == ["incr", "incr"]
    for n in range(9):
        await throttle.failed(ACCOUNT, stranger(n))
    # The 10th failure (not reserved: nothing took the lock before) reads and writes the lock.
    assert counting.take()[-2:] == ["get", "set_if_newer"]
    assert await refusal(throttle, stranger(1)) == "account"
    assert counting.take() == ["get_many"]
    await throttle.succeeded(ACCOUNT, OWNER_IP)
    assert sorted(counting.take()) == ["delete"] * 4 + ["set"]
    await throttle.clear(ACCOUNT)
    assert counting.take() == ["delete", "delete"]
    attempt = await throttle.reserve(ACCOUNT, stranger(3))
    assert sorted(counting.take()) == ["get_many", "incr", "incr"]
    assert await throttle.failed(ACCOUNT, stranger(3), attempt) == 1
    assert counting.take() == []
    limiter = RateLimiter(counting, replace(SETTINGS, ip_limit=1), clock=clock)
    await limiter.hit(OWNER_IP)
    assert sorted(counting.take()) == ["get_many", "incr", "incr"]
    with pytest.raises(TooManyRequests):
        await limiter.hit(OWNER_IP)
    assert sorted(counting.take()) == ["get_many"] + ["incr"] * 4

    assert counting.keys
    for key in counting.keys:
        assert key.startswith("throttle:")
        for secret in (ACCOUNT, "victim", OWNER_IP, "198.51"):
            assert secret not in key


async def test_disabled_allows_everything_and_touches_nothing(
    counting: CountingStore, clock: FrozenClock
) -> None:
    off = replace(SETTINGS, enabled=False, ip_limit=1, global_limit=1, account_failures=3)
    throttle = LoginThrottle(counting, off, clock=clock)
    limiter = RateLimiter(counting, off, clock=clock)
    for n in range(20):
        assert await throttle.failed(ACCOUNT, stranger(n)) == 0
        await throttle.check(ACCOUNT, stranger(n))
        await limiter.hit(OWNER_IP)
    await throttle.succeeded(ACCOUNT, OWNER_IP)
    await throttle.clear(ACCOUNT)
    assert counting.calls == []


async def test_store_errors_propagate(clock: FrozenClock) -> None:
    # Nothing listens on port 1: every call fails, and the limits neither allow nor deny.
    dead = RedisStore("redis://127.0.0.1:1/0", timeout=0.5)
    try:
        throttle = LoginThrottle(dead, SETTINGS, clock=clock)
        limiter = RateLimiter(dead, SETTINGS, clock=clock)
        with pytest.raises(CacheUnavailable):
            await throttle.check(ACCOUNT, OWNER_IP)
        with pytest.raises(CacheUnavailable):
            await throttle.failed(ACCOUNT, OWNER_IP)
        with pytest.raises(CacheUnavailable):
            await throttle.succeeded(ACCOUNT, OWNER_IP)
        with pytest.raises(CacheUnavailable):
            await limiter.hit(OWNER_IP)
    finally:
        await dead.close()


# IPv6: limits per source aggregate at a prefix (/64 by default); an IPv4-mapped address is IPv4.


async def test_sec_13_account_ip_limit_counts_a_64_as_one_source(
    store: Store, clock: FrozenClock
) -> None:
    throttle = LoginThrottle(store, replace(SETTINGS, account_ip_limit=5), clock=clock)
    for n in range(5):
        await throttle.failed(ACCOUNT, f"2001:db8:7:7::{n + 1}")
    assert await refusal(throttle, "2001:db8:7:7:ffff:ffff:ffff:ffff") == "account_ip"
    assert await refusal(throttle, "2001:db8:7:8::1") is None
    wide = LoginThrottle(
        store, replace(SETTINGS, account_ip_limit=5, ipv6_prefix_length=48), clock=clock
    )
    for n in range(5):
        await wide.failed("other@example.com", f"2001:db8:7:{n}::1")
    assert await refusal(wide, "2001:db8:7:ff::1", "other@example.com") == "account_ip"


async def test_sec_14_ip_limit_counts_a_64_as_one_client_and_mapped_ipv4_as_ipv4(
    store: Store, clock: FrozenClock
) -> None:
    limiter = RateLimiter(store, replace(SETTINGS, ip_limit=3), clock=clock)
    for n in range(3):
        await limiter.hit(f"2001:db8:9:9::{n + 1}")
    with pytest.raises(TooManyRequests):
        await limiter.hit("2001:db8:9:9:abcd::1")
    await limiter.hit("2001:db8:9:a::1")
    for _ in range(3):
        await limiter.hit("192.0.2.1")
    with pytest.raises(TooManyRequests):
        await limiter.hit("::ffff:192.0.2.1")


# An attempt is counted before its password is checked.


async def test_sec_13_a_reserved_attempt_is_counted_before_its_outcome(
    throttle: LoginThrottle,
) -> None:
    attempts = [await throttle.reserve(ACCOUNT, stranger(n)) for n in range(10)]
    assert attempts == list(range(1, 11))
    # No outcome reported (a crash, a timeout): the ten still count and the tenth locked.
    assert await refusal(throttle, stranger(50)) == "account"
    await throttle.succeeded(ACCOUNT, stranger(9))
    assert await throttle.reserve(ACCOUNT, stranger(51)) == 1


async def test_sec_13_concurrent_attempts_when_a_lock_ends_get_one_check(
    throttle: LoginThrottle, clock: FrozenClock
) -> None:
    for n in range(10):
        await throttle.failed(ACCOUNT, stranger(n))
    clock.advance(throttle.delay_after(10))

    async def attempt(n: int) -> int | str:
        try:
            return await throttle.reserve(ACCOUNT, f"2001:db8:5:{n}::1")
        except TooManyRequests as exc:
            return exc.limit

    outcomes = await asyncio.gather(*(attempt(n) for n in range(40)))
    [allowed] = [o for o in outcomes if isinstance(o, int)]
    # Its number may include concurrent attempts refused after it (a longer lock, never shorter).
    assert 11 <= allowed <= 50
    assert outcomes.count("account") == 39
    # The refused ones were taken back out: the next failure after this one is the 12th.
    await throttle.failed(ACCOUNT, "2001:db8:5:1::1", allowed)
    clock.advance(throttle.delay_after(allowed))
    assert await throttle.reserve(ACCOUNT, stranger(77)) == 12


async def test_sec_13_a_known_source_past_the_threshold_is_checked_and_locks_strangers(
    throttle: LoginThrottle,
) -> None:
    await throttle.succeeded(ACCOUNT, OWNER_IP)
    for n in range(10):
        await throttle.failed(ACCOUNT, stranger(n))
    attempt = await throttle.reserve(ACCOUNT, OWNER_IP)
    assert attempt == 11
    await throttle.failed(ACCOUNT, OWNER_IP, attempt)
    with pytest.raises(TooManyRequests) as refused:
        await throttle.reserve(ACCOUNT, stranger(1))
    assert refused.value.retry_after == throttle.delay_after(11)


async def test_sec_14_each_route_family_has_its_own_budgets(
    store: Store, clock: FrozenClock
) -> None:
    limiter = RateLimiter(store, replace(SETTINGS, ip_limit=2, global_limit=3), clock=clock)
    for n in range(3):
        await limiter.hit(stranger(n), "login")
    with pytest.raises(TooManyRequests) as refused:
        await limiter.hit(stranger(9), "login")
    assert refused.value.limit == "global"
    await limiter.hit(stranger(9), "register")
    await limiter.hit(stranger(0), "refresh")

    async def known() -> bool:
        return True

    async def unknown() -> bool:
        return False

    with pytest.raises(TooManyRequests):
        await limiter.hit(stranger(8), "login", exempt=unknown)
    # A spent global budget lets the exempt through; its per-client limit still holds.
    await limiter.hit(stranger(8), "login", exempt=known)
    await limiter.hit(stranger(8), "login", exempt=known)
    with pytest.raises(TooManyRequests):
        await limiter.hit(stranger(8), "login", exempt=known)
