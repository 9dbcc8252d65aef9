"""TokenAuthenticator: signature and claims, then the subject's live record, its session, scopes."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from keel._clock import FrozenClock
from keel.auth import (
    Authentication,
    SecurityState,
    SubjectRecord,
    SubjectState,
    TokenAuthenticator,
)
from keel.cache import LocalInvalidations, MemoryStore, Store
from keel.errors import DatabaseUnavailable, Unauthenticated
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
from tests.unit.cache._counting import CountingStore


def _counted(directory: Directory, clock: FrozenClock) -> tuple[SecurityState, CountingStore]:
    store = CountingStore(MemoryStore(clock))
    state = SecurityState(
        store, LocalInvalidations(), load_subject=directory.load, load_session=directory.session
    )
    return state, store


def issue(tokens: AccessTokens, subject: str = "user-1", *scopes: str) -> str:
    return tokens.issue(subject=subject, session_id="sid-1", scopes=scopes or ("user",)).token


async def refused(authenticator: TokenAuthenticator, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await authenticator.authenticate(token)
    return caught.value


def reason_of(error: InvalidToken) -> str:
    cause = error.__cause__
    assert cause is not None
    return str(cause)


async def test_a_valid_token_authenticates(
    authenticator: TokenAuthenticator, tokens: AccessTokens, clock: FrozenClock
) -> None:
    issued = tokens.issue(subject="user-1", session_id="sid-9", scopes=["user"])
    result = await authenticator.authenticate(issued.token)
    assert result == Authentication(
        subject="user-1",
        session_id="sid-9",
        token_id=issued.jti,
        scopes=frozenset({"user"}),
        issued_at=clock.now(),
        expires_at=issued.expires_at,
        profile=b'{"id": "user-1"}',
    )


async def test_scopes_are_the_tokens_intersected_with_the_subjects_current_ones(
    authenticator: TokenAuthenticator, tokens: AccessTokens
) -> None:
    # The token claims admin, but the subject only holds user: admin is not granted.
    token = issue(tokens, "user-1", "user", "admin")
    assert (await authenticator.authenticate(token)).scopes == {"user"}
    # The subject holds admin, but this token was issued without it: not granted either.
    narrow = issue(tokens, "admin-1", "user")
    assert (await authenticator.authenticate(narrow)).scopes == {"user"}


async def test_sec_36_role_removed_takes_effect_on_the_next_request(
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    directory: Directory,
    security: SecurityState,
) -> None:
    token = issue(tokens, "admin-1", "user", "admin")
    assert (await authenticator.authenticate(token)).scopes == {"user", "admin"}
    directory.change("admin-1", active("user"))
    await security.subject_changed("admin-1")
    assert (await authenticator.authenticate(token)).scopes == {"user"}


async def test_sec_36_disabled_subject_is_refused_at_once(
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    directory: Directory,
    security: SecurityState,
    clock: FrozenClock,
) -> None:
    token = issue(tokens)
    await authenticator.authenticate(token)
    directory.change(
        "user-1", SubjectState(False, clock.now() - timedelta(days=1), frozenset({"user"}))
    )
    await security.subject_changed("user-1")
    assert reason_of(await refused(authenticator, token)) == "subject_disabled"


async def test_sec_36_unknown_and_deleted_subjects_are_refused(
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    directory: Directory,
    security: SecurityState,
) -> None:
    assert reason_of(await refused(authenticator, issue(tokens, "nobody"))) == "unknown_subject"
    token = issue(tokens)
    await authenticator.authenticate(token)
    directory.change("user-1", None)
    await security.subject_changed("user-1")
    assert reason_of(await refused(authenticator, token)) == "unknown_subject"


async def test_sec_36_tokens_issued_before_valid_after_are_refused(
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    directory: Directory,
    security: SecurityState,
    clock: FrozenClock,
) -> None:
    old = issue(tokens)
    clock.advance(5)
    directory.change("user-1", active("user", valid_after=clock.now()))
    await security.subject_changed("user-1")
    assert reason_of(await refused(authenticator, old)) == "issued_before_valid_after"
    fresh = issue(tokens)
    assert (await authenticator.authenticate(fresh)).subject == "user-1"


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
    directory: Directory,
    clock: FrozenClock,
    bump_offset: timedelta,
    accepted: bool,
) -> None:
    token = issue(tokens)
    issued_at = clock.now().replace(microsecond=0)
    directory.change("user-1", active("user", valid_after=issued_at + bump_offset))
    if accepted:
        await authenticator.authenticate(token)
    else:
        await refused(authenticator, token)


async def test_sec_36_ended_session_refuses_all_of_its_tokens_and_no_other(
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    directory: Directory,
    security: SecurityState,
) -> None:
    mine = [tokens.issue(subject="user-1", session_id="sid-a", scopes=[]).token for _ in range(3)]
    other = tokens.issue(subject="user-1", session_id="sid-b", scopes=[]).token
    for token in (*mine, other):
        await authenticator.authenticate(token)  # every one cached as live
    directory.ended.add("sid-a")
    await security.sessions_ended("user-1", ["sid-a"])
    for token in mine:
        assert reason_of(await refused(authenticator, token)) == "session_ended"
    await authenticator.authenticate(other)


async def test_a_session_the_record_does_not_know_is_refused(
    authenticator: TokenAuthenticator, tokens: AccessTokens, directory: Directory
) -> None:
    directory.ended.add("sid-gone")  # the record says: no such live session
    token = tokens.issue(subject="user-1", session_id="sid-gone", scopes=[]).token
    assert reason_of(await refused(authenticator, token)) == "session_ended"


async def test_every_refusal_is_one_opaque_error(
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    keys: KeySet,
    directory: Directory,
    clock: FrozenClock,
) -> None:
    key = keys.current
    directory.ended.add("sid-r")
    ended = tokens.issue(subject="user-1", session_id="sid-r", scopes=[])
    errors = [
        await refused(authenticator, "garbage"),
        await refused(authenticator, issue(tokens, "nobody")),
        await refused(authenticator, ended.token),
        await refused(
            authenticator, forge(header_for(key), claims_for(clock, aud="other"), sign_with(key))
        ),
    ]
    for error in errors:
        assert type(error) is InvalidToken
        assert isinstance(error, Unauthenticated)
        assert error.code == "invalid_token"
        assert str(error) == "invalid token"
        assert error.__cause__ is not None


async def test_forged_tokens_never_reach_the_cache_or_the_record(
    tokens: AccessTokens, keys: KeySet, directory: Directory, clock: FrozenClock
) -> None:
    """An unauthenticated caller cannot make keel do I/O: refusals before any lookup."""
    state, store = _counted(directory, clock)
    authenticator = TokenAuthenticator(tokens, state)
    attacker = KeySet.generate("EdDSA").current
    for token in (
        "",
        "a.b.c",
        forge(header_for(keys.current, alg="none"), claims_for(clock), None),
        forge(header_for(attacker), claims_for(clock), sign_with(attacker)),
        forge(header_for(keys.current), claims_for(clock, exp=0), sign_with(keys.current)),
    ):
        await refused(authenticator, token)
    assert store.calls == []
    assert directory.loads == directory.session_loads == 0


async def test_the_warm_path_is_one_cache_round_trip_and_no_load(
    tokens: AccessTokens, directory: Directory, clock: FrozenClock
) -> None:
    state, store = _counted(directory, clock)
    authenticator = TokenAuthenticator(tokens, state)
    issued = tokens.issue(subject="user-1", session_id="sid-1", scopes=["user"])
    await authenticator.authenticate(issued.token)  # cold: one load each, one fill each
    assert (directory.loads, directory.session_loads) == (1, 1)
    subject_key, session_key = "sec:e0:{user-1}:s", "sec:e0:{user-1}:sid:sid-1"
    assert store.calls == [
        f"get_many {subject_key} {session_key}",
        f"set_if_newer {subject_key}",
        f"set_if_newer {session_key}",
    ]
    store.calls.clear()
    for _ in range(10):
        await authenticator.authenticate(issued.token)
    assert (directory.loads, directory.session_loads) == (1, 1)
    # The subject's record and its session's state: one get_many (one MGET on Redis).
    assert store.calls == 10 * [f"get_many {subject_key} {session_key}"]


async def test_an_unreadable_record_entry_is_reloaded_and_refilled(
    authenticator: TokenAuthenticator, tokens: AccessTokens, directory: Directory, store: Store
) -> None:
    key = "sec:e0:{user-1}:s"
    await store.set(key, b"not a record")
    result = await authenticator.authenticate(issue(tokens))
    assert result.subject == "user-1"
    assert directory.loads == 1
    assert await store.get(key) not in (None, b"not a record")


async def test_a_refused_token_hands_back_no_profile(
    authenticator: TokenAuthenticator, tokens: AccessTokens, directory: Directory
) -> None:
    directory.ended.add("sid-1")
    with pytest.raises(InvalidToken):
        await authenticator.authenticate(issue(tokens))


async def test_an_unreachable_database_is_an_outage_not_a_bad_token(
    tokens: AccessTokens, memory_store: MemoryStore, directory: Directory
) -> None:
    async def broken(subject_id: str) -> SubjectRecord:
        raise DatabaseUnavailable()

    state = SecurityState(
        memory_store, LocalInvalidations(), load_subject=broken, load_session=directory.session
    )
    with pytest.raises(DatabaseUnavailable):
        await TokenAuthenticator(tokens, state).authenticate(issue(tokens))


async def test_refusals_are_logged_with_a_reason_and_never_the_token(
    authenticator: TokenAuthenticator,
    tokens: AccessTokens,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = issue(tokens)
    unknown = issue(tokens, "nobody")
    with caplog.at_level(logging.DEBUG, logger="keel.auth"):
        await authenticator.authenticate(good)
        await refused(authenticator, unknown)
        await refused(authenticator, good + "x")
    refusals = [r for r in caplog.records if r.getMessage() == "access_token_refused"]
    assert [r.__dict__["fields"]["reason"] for r in refusals] == ["unknown_subject", "invalid"]
    assert refusals[0].levelno == logging.INFO
    assert refusals[0].__dict__["fields"]["subject"] == "nobody"
    assert refusals[1].levelno == logging.DEBUG
    for record in caplog.records:
        text = repr(record.__dict__)
        for token in (good, unknown):
            assert token.split(".")[2] not in text
