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
import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, update

from keel._clock import FrozenClock
from keel.accounts import (
    NO_ORIGIN,
    AccountService,
    CallerOrigin,
    FileMailer,
    InvalidCredentials,
    ResetTokenInvalid,
    User,
    VerificationFailed,
)
from keel.audit.models import AuditEventRow
from keel.auth.throttle import LoginThrottle
from keel.cache import MemoryStore
from keel.db import Database
from keel.errors import TooManyRequests
from keel.settings import Settings

from ._hooks import FakeSessions
from ._service import ServiceFactory

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


async def _audit(database: Database, actions: tuple[str, ...]) -> list[AuditEventRow]:
    """The failures among ``actions``, in order."""
    async with database.unit_of_work() as uow:
        query = (
            select(AuditEventRow)
            .where(AuditEventRow.action.in_(actions), AuditEventRow.result == "failure")
            .order_by(AuditEventRow.seq)
        )
        return list((await uow.session.execute(query)).scalars())


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
    sessions = FakeSessions()
    lax = service_factory(require_verified_email=False, sessions=sessions)
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
    service_factory: ServiceFactory, throttle: LoginThrottle
) -> None:
    service = service_factory(guard=throttle)
    await service.register(VICTIM, ATTACKER_PASSWORD, None, NO_ORIGIN)
    with pytest.raises(InvalidCredentials):
        await service.login(VICTIM, ATTACKER_PASSWORD, HOME)  # right password, unverified
    await _lock_out(throttle, VICTIM)
    with pytest.raises(TooManyRequests):
        await throttle.check(VICTIM, HOME.source_ip)


async def test_an_unverified_accounts_full_login_never_makes_its_source_known(
    service_factory: ServiceFactory, throttle: LoginThrottle
) -> None:
    lax = service_factory(require_verified_email=False, guard=throttle)
    await lax.register(VICTIM, ATTACKER_PASSWORD, None, NO_ORIGIN)
    await lax.login(VICTIM, ATTACKER_PASSWORD, HOME)
    await _lock_out(throttle, VICTIM)
    with pytest.raises(TooManyRequests):
        await throttle.check(VICTIM, HOME.source_ip)


async def test_a_verified_login_makes_its_source_known(
    service_factory: ServiceFactory, throttle: LoginThrottle
) -> None:
    service = service_factory(guard=throttle)
    await service.register(VICTIM, OWNER_PASSWORD, None, NO_ORIGIN)
    await service.verify_email((await _links(service, "verify_email", VICTIM))[-1], NO_ORIGIN)
    await service.login(VICTIM, OWNER_PASSWORD, HOME)
    await _lock_out(throttle, VICTIM)
    await throttle.check(VICTIM, HOME.source_ip)  # the owner's usual place is not locked out


async def test_a_password_reset_forgets_known_sources(
    service_factory: ServiceFactory, throttle: LoginThrottle, clock: FrozenClock
) -> None:
    service = service_factory(guard=throttle)
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
    service_factory: ServiceFactory, throttle: LoginThrottle, clock: FrozenClock
) -> None:
    service = service_factory(guard=throttle)
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


# --- pending links die with the credentials they were issued under -----------------------------

ATTACKER = "attacker@evil.example"
NEW_PASSWORD = "a brand new long passphrase 3"


async def _owner(service: AccountService, email: str = VICTIM) -> str:
    await service.register(email, OWNER_PASSWORD, None, NO_ORIGIN)
    await service.verify_email((await _links(service, "verify_email", email))[-1], NO_ORIGIN)
    return (await service.authenticate(email, OWNER_PASSWORD, NO_ORIGIN)).user_id


async def _change_to(service: AccountService, user_id: str, email: str) -> str:
    """Request a change of ``user_id``'s address to ``email``; the link mailed there."""
    await service.update_profile(user_id, NO_ORIGIN, email=email, current_password=OWNER_PASSWORD)
    return (await _links(service, "verify_email", email))[-1]


async def _reset_link(service: AccountService, email: str = VICTIM) -> str:
    await service.forgot_password(email, NO_ORIGIN)
    return (await _links(service, "password_reset", email))[-1]


async def test_a_password_reset_kills_a_pending_email_change_link(
    service: AccountService, clock: FrozenClock
) -> None:
    user_id = await _owner(service)
    stolen = await _change_to(service, user_id, ATTACKER)  # the attacker knew the password
    clock.advance(60)
    await service.reset_password(await _reset_link(service), NEW_PASSWORD, NO_ORIGIN)
    with pytest.raises(VerificationFailed):
        await service.verify_email(stolen, NO_ORIGIN)
    assert (await service.profile(user_id)).email == VICTIM


async def test_a_password_change_kills_a_pending_email_change_link(
    service: AccountService, clock: FrozenClock
) -> None:
    user_id = await _owner(service)
    stolen = await _change_to(service, user_id, ATTACKER)
    clock.advance(60)
    await service.change_password(user_id, OWNER_PASSWORD, NEW_PASSWORD, NO_ORIGIN)
    with pytest.raises(VerificationFailed):
        await service.verify_email(stolen, NO_ORIGIN)
    assert (await service.profile(user_id)).email == VICTIM


async def test_disabling_kills_pending_email_change_and_reset_links(
    service: AccountService, clock: FrozenClock
) -> None:
    admin = await service.create_admin("root@keel.example", OWNER_PASSWORD)
    user_id = await _owner(service)
    stolen = await _change_to(service, user_id, ATTACKER)
    reset = await _reset_link(service)
    clock.advance(60)
    await service.set_active(admin.id, user_id, False, NO_ORIGIN)
    await service.set_active(admin.id, user_id, True, NO_ORIGIN)
    with pytest.raises(VerificationFailed):
        await service.verify_email(stolen, NO_ORIGIN)
    with pytest.raises(ResetTokenInvalid):
        await service.reset_password(reset, NEW_PASSWORD, NO_ORIGIN)


async def test_a_link_issued_under_an_older_credential_generation_is_refused(
    service: AccountService, database: Database, clock: FrozenClock
) -> None:
    user_id = await _owner(service)
    change = await _change_to(service, user_id, ATTACKER)
    reset = await _reset_link(service)
    clock.advance(2)
    # The generation moves on without the links being deleted (an operator, an older
    # instance): each link carries the generation it was issued under and is refused.
    async with database.unit_of_work() as uow:
        await uow.session.execute(
            update(User)
            .where(User.email_key == VICTIM)
            .values(tokens_valid_after=clock.now().replace(microsecond=0))
        )
    with pytest.raises(VerificationFailed):
        await service.verify_email(change, NO_ORIGIN)
    with pytest.raises(ResetTokenInvalid):
        await service.reset_password(reset, NEW_PASSWORD, NO_ORIGIN)
    reasons = [
        json.loads(row.details)["reason"]
        for row in await _audit(database, ("authn_email_verified", "authn_password_change_fail"))
    ]
    assert reasons == ["outdated", "outdated"]


async def test_changing_the_address_back_cancels_a_pending_change(
    service: AccountService,
) -> None:
    user_id = await _owner(service)
    stolen = await _change_to(service, user_id, ATTACKER)
    view = await service.update_profile(user_id, NO_ORIGIN, email=VICTIM)
    assert view.email == VICTIM
    with pytest.raises(VerificationFailed):
        await service.verify_email(stolen, NO_ORIGIN)
    assert (await service.profile(user_id)).email == VICTIM


# --- an e-mail change ends pending reset links -------------------------------------------------

NEW_ADDRESS = "victim.new@keel.example"


@pytest.mark.parametrize("taken", [False, True], ids=["free", "taken"])
async def test_requesting_an_email_change_kills_pending_reset_links(
    service: AccountService, taken: bool
) -> None:
    user_id = await _owner(service)
    if taken:
        await _owner(service, NEW_ADDRESS)  # the answer never says whether it is taken
    reset = await _reset_link(service)
    await service.update_profile(
        user_id, NO_ORIGIN, email=NEW_ADDRESS, current_password=OWNER_PASSWORD
    )
    with pytest.raises(ResetTokenInvalid):
        await service.reset_password(reset, NEW_PASSWORD, NO_ORIGIN)


async def test_completing_an_email_change_kills_pending_reset_links(
    service: AccountService,
) -> None:
    user_id = await _owner(service)
    change = await _change_to(service, user_id, NEW_ADDRESS)
    reset = await _reset_link(service)  # mailed to the old address
    await service.verify_email(change, NO_ORIGIN)
    assert (await service.profile(user_id)).email == NEW_ADDRESS
    with pytest.raises(ResetTokenInvalid):
        await service.reset_password(reset, NEW_PASSWORD, NO_ORIGIN)
    await service.authenticate(NEW_ADDRESS, OWNER_PASSWORD, NO_ORIGIN)
