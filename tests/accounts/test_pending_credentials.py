"""Pending registrations, links and known sources after credential changes (SQLite and PostgreSQL).

- Account pre-hijacking: registering an address that has an unverified
  account replaces the unverified credentials (password, sessions, links).
- Pending verification, e-mail-change and reset links die with a password
  change, a reset and a disable, and carry the credential generation.
- Known login sources are forgotten when the password changes and are never
  earned by an unverified account.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from keel._clock import FrozenClock
from keel.accounts import (
    NO_ORIGIN,
    AccountService,
    CallerOrigin,
    FileMailer,
    InvalidCredentials,
    User,
    VerificationFailed,
)
from keel.auth.throttle import LoginThrottle
from keel.cache import MemoryStore
from keel.db import Database
from keel.errors import TooManyRequests
from keel.settings import Settings

from ._hooks import FakeSessions
from .conftest import ServiceFactory

ATTACKER_PASSWORD = "attacker chose this long passphrase 7"
OWNER_PASSWORD = "the real owner's long passphrase 9"
VICTIM = "victim@keel.example"
HOME = CallerOrigin(source_ip="198.51.100.7", user_agent="pytest", request_id=None)
STRANGER = CallerOrigin(source_ip="203.0.113.66", user_agent="pytest", request_id=None)


async def _links(service: AccountService, kind: str, to: str) -> list[str]:
    """Every token mailed to ``to`` in messages of ``kind``, oldest first."""
    outbox = service.outbox
    assert outbox is not None
    await outbox.drain()
    mailer = outbox.mailer
    assert isinstance(mailer, FileMailer)
    tokens = []
    for message in mailer.read():
        if message["kind"] == kind and message["to"] == to:
            line = next(line for line in message["body"].splitlines() if "#token=" in line)
            tokens.append(str(line.rsplit("#token=", 1)[1]))
    return tokens


async def _user(database: Database, email_key: str) -> User:
    async with database.unit_of_work() as uow:
        user = (
            await uow.session.execute(select(User).where(User.email_key == email_key))
        ).scalar_one()
    return user


@pytest.fixture
async def throttle(settings: Settings, clock: FrozenClock) -> AsyncIterator[LoginThrottle]:
    store = MemoryStore(clock)
    limits = dataclasses.replace(settings.throttle, enabled=True, account_failures=3)
    yield LoginThrottle(store, limits, clock=clock)
    await store.close()


async def _lock_out(throttle: LoginThrottle, key: str) -> None:
    """A stranger's failures lock the account for sources it has not logged in from."""
    for _ in range(3):
        await throttle.failed(key, STRANGER.source_ip)
    with pytest.raises(TooManyRequests):
        await throttle.check(key, STRANGER.source_ip)


# --- account pre-hijacking ---------------------------------------------------------------------


async def test_reregistering_an_unverified_address_replaces_the_first_registrants_password(
    service: AccountService, clock: FrozenClock
) -> None:
    await service.register(VICTIM, ATTACKER_PASSWORD, "Mallory", NO_ORIGIN)
    clock.advance(60)
    await service.register(VICTIM, OWNER_PASSWORD, "Victoria", NO_ORIGIN)
    links = await _links(service, "verify_email", VICTIM)
    assert len(links) == 2
    # The link sent for the first registration no longer verifies anything.
    with pytest.raises(VerificationFailed):
        await service.verify_email(links[0], NO_ORIGIN)
    await service.verify_email(links[1], NO_ORIGIN)
    with pytest.raises(InvalidCredentials):
        await service.authenticate(VICTIM, ATTACKER_PASSWORD, NO_ORIGIN)
    state = await service.authenticate(VICTIM, OWNER_PASSWORD, NO_ORIGIN)
    assert (await service.profile(state.user_id)).display_name == "Victoria"


async def test_reregistering_an_unverified_address_ends_the_first_registrants_sessions(
    service_factory: ServiceFactory, database: Database, clock: FrozenClock
) -> None:
    lax = service_factory(require_verified_email=False)
    sessions = FakeSessions()
    lax.set_session_hooks(sessions)
    await lax.register(VICTIM, ATTACKER_PASSWORD, None, NO_ORIGIN)
    early = await lax.login(VICTIM, ATTACKER_PASSWORD, NO_ORIGIN)
    issued_at = clock.now()
    clock.advance(5)
    await lax.register(VICTIM, OWNER_PASSWORD, None, NO_ORIGIN)
    assert sessions.sessions_of(early.state.user_id) == []
    user = await _user(database, VICTIM)
    # Access tokens of the first registrant's sessions die too.
    assert user.tokens_valid_after > issued_at
    with pytest.raises(InvalidCredentials):
        await lax.login(VICTIM, ATTACKER_PASSWORD, NO_ORIGIN)
    await lax.login(VICTIM, OWNER_PASSWORD, NO_ORIGIN)


async def test_registering_a_verified_address_changes_nothing(
    service: AccountService, database: Database, clock: FrozenClock
) -> None:
    await service.register(VICTIM, OWNER_PASSWORD, None, NO_ORIGIN)
    await service.verify_email((await _links(service, "verify_email", VICTIM))[-1], NO_ORIGIN)
    before = await _user(database, VICTIM)
    clock.advance(5)
    await service.register(VICTIM, ATTACKER_PASSWORD, None, NO_ORIGIN)
    after = await _user(database, VICTIM)
    assert (after.password_hash, after.tokens_valid_after) == (
        before.password_hash,
        before.tokens_valid_after,
    )
    await service.authenticate(VICTIM, OWNER_PASSWORD, NO_ORIGIN)


async def test_an_unverified_accounts_login_never_makes_its_source_known(
    service: AccountService, throttle: LoginThrottle
) -> None:
    service.set_guard(throttle)
    await service.register(VICTIM, ATTACKER_PASSWORD, None, NO_ORIGIN)
    with pytest.raises(InvalidCredentials):
        await service.login(VICTIM, ATTACKER_PASSWORD, HOME)  # right password, unverified
    await _lock_out(throttle, VICTIM)
    with pytest.raises(TooManyRequests):
        await throttle.check(VICTIM, HOME.source_ip)


async def test_an_unverified_accounts_full_login_never_makes_its_source_known(
    service_factory: ServiceFactory, throttle: LoginThrottle
) -> None:
    lax = service_factory(require_verified_email=False)
    lax.set_guard(throttle)
    await lax.register(VICTIM, ATTACKER_PASSWORD, None, NO_ORIGIN)
    await lax.login(VICTIM, ATTACKER_PASSWORD, HOME)
    await _lock_out(throttle, VICTIM)
    with pytest.raises(TooManyRequests):
        await throttle.check(VICTIM, HOME.source_ip)


async def test_a_verified_login_makes_its_source_known(
    service: AccountService, throttle: LoginThrottle
) -> None:
    service.set_guard(throttle)
    await service.register(VICTIM, OWNER_PASSWORD, None, NO_ORIGIN)
    await service.verify_email((await _links(service, "verify_email", VICTIM))[-1], NO_ORIGIN)
    await service.login(VICTIM, OWNER_PASSWORD, HOME)
    await _lock_out(throttle, VICTIM)
    await throttle.check(VICTIM, HOME.source_ip)  # the owner's usual place is not locked out


async def test_a_password_reset_forgets_known_sources(
    service: AccountService, throttle: LoginThrottle, clock: FrozenClock
) -> None:
    service.set_guard(throttle)
    await service.register(VICTIM, OWNER_PASSWORD, None, NO_ORIGIN)
    await service.verify_email((await _links(service, "verify_email", VICTIM))[-1], NO_ORIGIN)
    await service.login(VICTIM, OWNER_PASSWORD, HOME)
    clock.advance(1)
    await service.forgot_password(VICTIM, NO_ORIGIN)
    reset = (await _links(service, "password_reset", VICTIM))[-1]
    await service.reset_password(reset, "a brand new long passphrase 3", NO_ORIGIN)
    await _lock_out(throttle, VICTIM)
    with pytest.raises(TooManyRequests):
        await throttle.check(VICTIM, HOME.source_ip)


async def test_a_password_change_forgets_known_sources(
    service: AccountService, throttle: LoginThrottle, clock: FrozenClock
) -> None:
    service.set_guard(throttle)
    await service.register(VICTIM, OWNER_PASSWORD, None, NO_ORIGIN)
    await service.verify_email((await _links(service, "verify_email", VICTIM))[-1], NO_ORIGIN)
    result = await service.login(VICTIM, OWNER_PASSWORD, HOME)
    clock.advance(1)
    await service.change_password(
        result.state.user_id, OWNER_PASSWORD, "a brand new long passphrase 3", NO_ORIGIN
    )
    await _lock_out(throttle, VICTIM)
    with pytest.raises(TooManyRequests):
        await throttle.check(VICTIM, HOME.source_ip)
