"""TokenAuthenticator: signature and claims, then live subject state, the deny-list and scopes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import pytest

from keel._clock import FrozenClock
from keel.auth import (
    Authentication,
    SubjectState,
    TokenAuthenticator,
    publish_subject_state,
    revoke_session,
    revoke_token,
)
from keel.cache import CacheStatus, MemoryStore, Store
from keel.errors import CacheUnavailable, DatabaseUnavailable, Unauthenticated
from keel.security.keys import KeySet
from keel.security.tokens import AccessTokens, InvalidToken
from tests.unit.auth._support import (
    Directory,
    active,
    claims_for,
    forge,
    header_for,
    sign_with,
)


class CountingStore:
    """A ``Store`` that counts the calls it forwards, to pin down the hot path's cost."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def get(self, key: str) -> bytes | None:
        self.calls.append(f"get {key}")
        return await self.inner.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.calls.append(f"get_many {' '.join(keys)}")
        return await self.inner.get_many(keys)

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self.calls.append(f"set {key}")
        await self.inner.set(key, value, ttl=ttl)

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        self.calls.append(f"add {key}")
        return await self.inner.add(key, value, ttl=ttl)

    async def delete(self, key: str) -> None:
        self.calls.append(f"delete {key}")
        await self.inner.delete(key)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        self.calls.append(f"incr {key}")
        return await self.inner.incr(key, amount, ttl=ttl)

    async def ttl(self, key: str) -> float | None:
        return await self.inner.ttl(key)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()

    @property
    def status(self) -> CacheStatus:
        return self.inner.status


class DownStore(CountingStore):
    """Every read fails the way an unreachable Redis does."""

    async def get(self, key: str) -> bytes | None:
        raise CacheUnavailable("Redis did not answer")

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise CacheUnavailable("Redis did not answer")


def issue(tokens: AccessTokens, subject: str = "user-1", *scopes: str) -> str:
    return tokens.issue(subject=subject, session_id="sid-1", scopes=scopes or ("user",)).token


async def refused(authenticator: TokenAuthenticator, token: str, store: Store) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await authenticator.authenticate(token, store)
    return caught.value


def reason_of(error: InvalidToken) -> str:
    cause = error.__cause__
    assert cause is not None
    return str(cause)


async def test_a_valid_token_authenticates(
    authenticator: TokenAuthenticator, tokens: AccessTokens, store: Store, clock: FrozenClock
) -> None:
    issued = tokens.issue(subject="user-1", session_id="sid-9", scopes=["user"])
    result = await authenticator.authenticate(issued.token, store)
    assert result == Authentication(
        subject="user-1",
        session_id="sid-9",
        token_id=issued.jti,
        scopes=frozenset({"user"}),
        issued_at=clock.now(),
        expires_at=issued.expires_at,
    )


async def test_scopes_are_the_tokens_intersected_with_the_subjects_current_ones(
    authenticator: TokenAuthenticator, tokens: AccessTokens, store: Store
) -> None:
    # The token claims admin, but the subject only holds user: admin is not granted.
    token = issue(tokens, "user-1", "user", "admin")
    assert (await authenticator.authenticate(token, store)).scopes == {"user"}
    # The subject holds admin, but this token was issued without it: not granted either.
    narrow = issue(tokens, "admin-1", "user")
    assert (await authenticator.authenticate(narrow, store)).scopes == {"user"}


async def test_sec_36_role_removed_takes_effect_on_the_next_request(
    authenticator: TokenAuthenticator, tokens: AccessTokens, store: Store
) -> None:
    token = issue(tokens, "admin-1", "user", "admin")
    assert (await authenticator.authenticate(token, store)).scopes == {"user", "admin"}
    await publish_subject_state(store, "admin-1", active("user"))
    assert (await authenticator.authenticate(token, store)).scopes == {"user"}


async def test_sec_36_disabled_subject_is_refused_at_once(
    authenticator: TokenAuthenticator, tokens: AccessTokens, store: Store, clock: FrozenClock
) -> None:
    token = issue(tokens)
    await authenticator.authenticate(token, store)
    await publish_subject_state(
        store, "user-1", SubjectState(False, clock.now() - timedelta(days=1), frozenset({"user"}))
    )
    assert reason_of(await refused(authenticator, token, store)) == "subject_disabled"


async def test_sec_36_unknown_subject_is_refused(
    authenticator: TokenAuthenticator, tokens: AccessTokens, store: Store
) -> None:
    error = await refused(authenticator, issue(tokens, "deleted-user"), store)
    assert reason_of(error) == "unknown_subject"


async def test_sec_36_tokens_issued_before_valid_after_are_refused(
    authenticator: TokenAuthenticator, tokens: AccessTokens, store: Store, clock: FrozenClock
) -> None:
    old = issue(tokens)
    clock.advance(5)
    await publish_subject_state(store, "user-1", active("user", valid_after=clock.now()))
    assert reason_of(await refused(authenticator, old, store)) == "issued_before_valid_after"
    fresh = issue(tokens)
    assert (await authenticator.authenticate(fresh, store)).subject == "user-1"


@pytest.mark.parametrize(
    ("bump_offset", "accepted"),
    [
        (timedelta(seconds=-1), True),  # bumped a second before issuance
        (timedelta(0), True),  # the same instant
        (timedelta(microseconds=999_999), True),  # later, but within iat's second
        (timedelta(seconds=1), False),  # the next second: the token predates it
    ],
)
async def test_valid_after_is_compared_at_the_granularity_of_iat(
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    store: Store,
    clock: FrozenClock,
    bump_offset: timedelta,
    accepted: bool,
) -> None:
    token = issue(tokens)
    issued_at = clock.now().replace(microsecond=0)
    await publish_subject_state(
        store, "user-1", active("user", valid_after=issued_at + bump_offset)
    )
    if accepted:
        await authenticator.authenticate(token, store)
    else:
        await refused(authenticator, token, store)


async def test_sec_36_revoked_token_is_refused_and_others_are_not(
    authenticator: TokenAuthenticator, tokens: AccessTokens, store: Store, clock: FrozenClock
) -> None:
    first = tokens.issue(subject="user-1", session_id="sid-1", scopes=["user"])
    second = tokens.issue(subject="user-1", session_id="sid-1", scopes=["user"])
    await revoke_token(store, first.jti, first.expires_at, clock=clock)
    assert reason_of(await refused(authenticator, first.token, store)) == "jti_revoked"
    await authenticator.authenticate(second.token, store)


async def test_sec_36_revoked_session_refuses_all_of_its_tokens(
    authenticator: TokenAuthenticator, tokens: AccessTokens, store: Store
) -> None:
    mine = [tokens.issue(subject="user-1", session_id="sid-a", scopes=[]).token for _ in range(3)]
    other = tokens.issue(subject="user-1", session_id="sid-b", scopes=[]).token
    await revoke_session(store, "sid-a")
    for token in mine:
        assert reason_of(await refused(authenticator, token, store)) == "sid_revoked"
    await authenticator.authenticate(other, store)


async def test_every_refusal_is_one_opaque_error(
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    keys: KeySet,
    store: Store,
    clock: FrozenClock,
) -> None:
    key = keys.current
    revoked = tokens.issue(subject="user-1", session_id="sid-r", scopes=[])
    await revoke_token(store, revoked.jti, revoked.expires_at, clock=clock)
    errors = [
        await refused(authenticator, "garbage", store),
        await refused(authenticator, issue(tokens, "nobody"), store),
        await refused(authenticator, revoked.token, store),
        await refused(
            authenticator,
            forge(header_for(key), claims_for(clock, aud="other"), sign_with(key)),
            store,
        ),
    ]
    for error in errors:
        assert type(error) is InvalidToken
        assert isinstance(error, Unauthenticated)
        assert error.code == "invalid_token"
        assert str(error) == "invalid token"
        assert error.__cause__ is not None


async def test_forged_tokens_never_reach_the_cache_or_the_loader(
    tokens: AccessTokens, keys: KeySet, directory: Directory, clock: FrozenClock
) -> None:
    """An unauthenticated caller cannot make keel do I/O: refusals before any lookup."""
    store = CountingStore(MemoryStore(clock))
    authenticator = TokenAuthenticator(tokens, directory.load)
    attacker = KeySet.generate("EdDSA").current
    for token in (
        "",
        "a.b.c",
        forge(header_for(keys.current, alg="none"), claims_for(clock), None),
        forge(header_for(attacker), claims_for(clock), sign_with(attacker)),
        forge(header_for(keys.current), claims_for(clock, exp=0), sign_with(keys.current)),
    ):
        await refused(authenticator, token, store)
    assert store.calls == []
    assert directory.loads == 0


async def test_the_warm_path_is_one_cache_round_trip_and_no_load(
    tokens: AccessTokens, directory: Directory, clock: FrozenClock
) -> None:
    store = CountingStore(MemoryStore(clock))
    authenticator = TokenAuthenticator(tokens, directory.load)
    issued = tokens.issue(subject="user-1", session_id="sid-1", scopes=["user"])
    await authenticator.authenticate(issued.token, store)  # cold: one load, one fill
    assert directory.loads == 1
    assert store.calls == [
        f"get_many auth:subject:user-1 revoked:jti:{issued.jti} revoked:sid:sid-1",
        "add auth:subject:user-1",
    ]
    store.calls.clear()
    for _ in range(10):
        await authenticator.authenticate(issued.token, store)
    assert directory.loads == 1
    # Subject state, jti and sid deny-list entries: one get_many (one MGET on Redis).
    assert store.calls == 10 * [
        f"get_many auth:subject:user-1 revoked:jti:{issued.jti} revoked:sid:sid-1"
    ]


async def test_an_unreadable_state_entry_is_reloaded_and_refilled(
    authenticator: TokenAuthenticator, tokens: AccessTokens, directory: Directory, store: Store
) -> None:
    await store.set("auth:subject:user-1", b"not a state")
    result = await authenticator.authenticate(issue(tokens), store)
    assert result.subject == "user-1"
    assert directory.loads == 1
    assert await store.get("auth:subject:user-1") not in (None, b"not a state")


async def test_prefetched_keys_come_back_with_the_authentication(
    tokens: AccessTokens, directory: Directory, clock: FrozenClock
) -> None:
    store = CountingStore(MemoryStore(clock))
    authenticator = TokenAuthenticator(tokens, directory.load)
    await store.inner.set("view:user-1", b"cached view")
    token = issue(tokens)
    await authenticator.authenticate(token, store)  # cold
    store.calls.clear()
    result = await authenticator.authenticate(
        token, store, prefetch=lambda subject: [f"view:{subject}", "absent"]
    )
    assert dict(result.prefetched) == {"view:user-1": b"cached view", "absent": None}
    [call] = store.calls
    assert call.startswith("get_many auth:subject:user-1 ")
    assert call.endswith(" view:user-1 absent")
    assert dict((await authenticator.authenticate(token, store)).prefetched) == {}


async def test_a_refused_token_hands_back_no_prefetched_value(
    authenticator: TokenAuthenticator, tokens: AccessTokens, store: Store, clock: FrozenClock
) -> None:
    issued = tokens.issue(subject="user-1", session_id="sid-1", scopes=["user"])
    await revoke_token(store, issued.jti, issued.expires_at, clock=clock)
    await store.set("view:user-1", b"secret-ish")
    with pytest.raises(InvalidToken):
        await authenticator.authenticate(issued.token, store, prefetch=lambda s: [f"view:{s}"])


async def test_an_unreachable_cache_is_an_outage_not_a_bad_token(
    authenticator: TokenAuthenticator, tokens: AccessTokens, clock: FrozenClock
) -> None:
    with pytest.raises(CacheUnavailable):
        await authenticator.authenticate(issue(tokens), DownStore(MemoryStore(clock)))


async def test_an_unreachable_database_is_an_outage_not_a_bad_token(
    tokens: AccessTokens, memory_store: MemoryStore
) -> None:
    async def broken(subject_id: str) -> SubjectState | None:
        raise DatabaseUnavailable()

    with pytest.raises(DatabaseUnavailable):
        await TokenAuthenticator(tokens, broken).authenticate(issue(tokens), memory_store)


async def test_refusals_are_logged_with_a_reason_and_never_the_token(
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    memory_store: MemoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = issue(tokens)
    unknown = issue(tokens, "nobody")
    with caplog.at_level(logging.DEBUG, logger="keel.auth"):
        await authenticator.authenticate(good, memory_store)
        await refused(authenticator, unknown, memory_store)
        await refused(authenticator, good + "x", memory_store)
    refusals = [r for r in caplog.records if r.getMessage() == "access_token_refused"]
    assert [r.__dict__["fields"]["reason"] for r in refusals] == ["unknown_subject", "invalid"]
    assert refusals[0].levelno == logging.INFO
    assert refusals[0].__dict__["fields"]["subject"] == "nobody"
    assert refusals[1].levelno == logging.DEBUG
    for record in caplog.records:
        text = repr(record.__dict__)
        for token in (good, unknown):
            assert token.split(".")[2] not in text


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
def test_state_ttl_must_be_positive(tokens: AccessTokens, directory: Directory, ttl: float) -> None:
    with pytest.raises(ValueError, match="state_ttl"):
        TokenAuthenticator(tokens, directory.load, state_ttl=ttl)
