"""The login's two steps (``keel.accounts.login``): credentials verified, then login completed.

Whatever goes between them later (a second factor) relies on this: verifying
starts nothing and audits no success; completing refuses credentials that
changed since they were verified; every path through verification pays
exactly one password verification and completing pays none. Real SQLite and
PostgreSQL; recording stand-ins for the sessions and the guard.
"""

from __future__ import annotations

import json

import pytest

from keel._clock import FrozenClock
from keel.accounts import (
    AccountService,
    CallerOrigin,
    InvalidCredentials,
    ScopeNotGranted,
    VerifiedLogin,
)
from keel.audit import Action
from keel.db import Database
from keel.security.hashing import PasswordHasher

from ._accounts import PASSWORD, _verified, audit_rows
from ._hooks import CountingHasher, FakeGuard, FakeSessions
from ._service import ServiceFactory

FROM = CallerOrigin(source_ip="192.0.2.20", user_agent="pytest", request_id="req-seam")
NEW_PASSWORD = "a brand new long passphrase 3"


@pytest.fixture
def service(guarded: AccountService) -> AccountService:
    return guarded


async def test_verified_credentials_are_not_yet_a_login(
    service: AccountService, sessions: FakeSessions, guard: FakeGuard, database: Database
) -> None:
    user_id = await _verified(service, "seam@keel.example")
    successes = len(await audit_rows(database, Action.AUTHN_LOGIN_SUCCESS))
    verified = await service.areas.login.verify_credentials("seam@keel.example", PASSWORD, FROM)
    assert verified.state.user_id == user_id
    assert guard.kinds()[-2:] == ["reserve", "succeeded"]  # the guard knows the password was right
    assert sessions.started == []
    assert len(await audit_rows(database, Action.AUTHN_LOGIN_SUCCESS)) == successes
    result = await service.areas.login.complete_login(verified, FROM)
    assert sessions.started == [(user_id, result.session_id, frozenset({"user"}))]
    assert result.refresh_token == f"refresh-{result.session_id}"
    row = (await audit_rows(database, Action.AUTHN_LOGIN_SUCCESS))[-1]
    assert json.loads(row.details)["session_id"] == result.session_id


async def test_a_verified_login_never_shows_its_password(service: AccountService) -> None:
    await _verified(service, "quiet@keel.example")
    verified = await service.verify_credentials("quiet@keel.example", PASSWORD, FROM)
    assert isinstance(verified, VerifiedLogin)
    assert PASSWORD not in repr(verified)


async def test_completing_after_a_password_change_is_refused(
    service: AccountService, database: Database, clock: FrozenClock
) -> None:
    user_id = await _verified(service, "moved@keel.example")
    verified = await service.verify_credentials("moved@keel.example", PASSWORD, FROM)
    clock.advance(2)
    await service.change_password(user_id, PASSWORD, NEW_PASSWORD, FROM)
    successes = len(await audit_rows(database, Action.AUTHN_LOGIN_SUCCESS))
    with pytest.raises(InvalidCredentials):
        await service.complete_login(verified, FROM)
    # Its transaction (the session's insert with it) rolled back: no success is recorded.
    assert len(await audit_rows(database, Action.AUTHN_LOGIN_SUCCESS)) == successes
    failure = (await audit_rows(database, Action.AUTHN_LOGIN_FAIL))[-1]
    assert json.loads(failure.details) == {"reason": "credentials_changed"}


async def test_completing_for_a_disabled_account_is_refused(
    service: AccountService, database: Database, clock: FrozenClock
) -> None:
    user_id = await _verified(service, "off@keel.example")
    admin = await service.create_admin("root@keel.example", PASSWORD)
    verified = await service.verify_credentials("off@keel.example", PASSWORD, FROM)
    clock.advance(2)
    await service.set_active(admin.id, user_id, False, FROM)
    with pytest.raises(InvalidCredentials):
        await service.complete_login(verified, FROM)
    failure = (await audit_rows(database, Action.AUTHN_LOGIN_FAIL))[-1]
    assert json.loads(failure.details) == {"reason": "credentials_changed"}


async def test_completing_with_a_scope_the_account_lacks_is_refused(
    service: AccountService, sessions: FakeSessions, database: Database
) -> None:
    await _verified(service, "narrow@keel.example")
    verified = await service.verify_credentials("narrow@keel.example", PASSWORD, FROM)
    with pytest.raises(ScopeNotGranted):
        await service.complete_login(verified, FROM, scopes={"admin"})
    assert sessions.started == []
    failure = (await audit_rows(database, Action.AUTHN_LOGIN_FAIL))[-1]
    assert json.loads(failure.details) == {"reason": "scope_not_granted"}
    narrowed = await service.complete_login(verified, FROM, scopes={"user"})
    assert narrowed.scopes == frozenset({"user"})


async def test_sec_11_verifying_pays_one_verification_and_completing_none(
    service_factory: ServiceFactory, hasher: PasswordHasher
) -> None:
    counting = CountingHasher(hasher)
    service = service_factory(hasher=counting)
    await _verified(service, "known@keel.example")
    await service.register("unverified@keel.example", PASSWORD, None, FROM)
    admin = await service.create_admin("root@keel.example", PASSWORD)
    disabled = await _verified(service, "disabled@keel.example")
    await service.set_active(admin.id, disabled, False, FROM)
    attempts = [
        ("known@keel.example", "wrong password entirely"),
        ("nobody@keel.example", PASSWORD),
        ("not an address", PASSWORD),
        ("disabled@keel.example", PASSWORD),
        ("unverified@keel.example", PASSWORD),
    ]
    for email, password in attempts:
        before = counting.verifications
        with pytest.raises(InvalidCredentials):
            await service.verify_credentials(email, password, FROM)
        assert counting.verifications == before + 1, email
    before = counting.verifications
    verified = await service.verify_credentials("known@keel.example", PASSWORD, FROM)
    assert counting.verifications == before + 1
    await service.complete_login(verified, FROM)
    assert counting.verifications == before + 1
