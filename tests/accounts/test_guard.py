"""``AccountService`` with a login guard and session hooks: SEC-13 (account limit), SEC-64 events.

The guard and the sessions are recording stand-ins (``_hooks``); the database
is real SQLite and PostgreSQL.
"""

from __future__ import annotations

import json

import pytest

from keel._clock import FrozenClock
from keel.accounts import NO_ORIGIN, AccountService, CallerOrigin, InvalidCredentials
from keel.audit import AuditTrail
from keel.db import Database
from keel.errors import TooManyRequests
from keel.security.hashing import PasswordHasher
from keel.security.passwords import PasswordPolicy
from keel.settings import Settings

from ._accounts import PASSWORD, _verified, audit_rows
from ._hooks import CountingHasher, FakeGuard, FakeSessions
from ._service import ServiceFactory

FROM = CallerOrigin(source_ip="192.0.2.10", user_agent="pytest", request_id="req-1")


async def test_sec_13_failures_are_counted_by_normalised_account_key(
    guarded: AccountService, guard: FakeGuard
) -> None:
    await _verified(guarded, "count@keel.example")
    for spelling in ("count@keel.example", " COUNT@Keel.Example "):
        with pytest.raises(InvalidCredentials):
            await guarded.authenticate(spelling, "wrong password entirely", FROM)
    assert guard.failures["count@keel.example"] == 2
    # Unknown addresses and non-addresses are limited alike, by their own keys.
    with pytest.raises(InvalidCredentials):
        await guarded.authenticate("nobody@keel.example", PASSWORD, FROM)
    with pytest.raises(InvalidCredentials):
        await guarded.authenticate("  Not An Address ", PASSWORD, FROM)
    assert guard.failures["nobody@keel.example"] == 1
    assert guard.failures["not an address"] == 1
    assert ("reserve", "not an address", "192.0.2.10") in guard.calls


async def test_sec_13_success_resets_the_count(guarded: AccountService, guard: FakeGuard) -> None:
    await _verified(guarded, "reset-count@keel.example")
    with pytest.raises(InvalidCredentials):
        await guarded.authenticate("reset-count@keel.example", "wrong password entirely", FROM)
    await guarded.authenticate("reset-count@keel.example", PASSWORD, FROM)
    assert guard.failures["reset-count@keel.example"] == 0
    assert guard.kinds()[-2:] == ["reserve", "succeeded"]


async def test_sec_13_a_refusal_comes_before_any_password_check(
    service_factory: ServiceFactory,
    hasher: PasswordHasher,
    guard: FakeGuard,
    database: Database,
    settings: Settings,
    clock: FrozenClock,
) -> None:
    counting = CountingHasher(hasher)
    service = service_factory(lockout_threshold=3)
    user_id = await _verified(service, "locked@keel.example")
    locked = AccountService(
        database=database,
        audit=AuditTrail.from_settings(database, settings.audit, clock),
        hasher=counting,  # type: ignore[arg-type]
        policy=PasswordPolicy(settings.passwords),
        settings=service.settings,
        clock=clock,
        guard=guard,
    )
    for _ in range(3):
        with pytest.raises(InvalidCredentials):
            await locked.authenticate("locked@keel.example", "wrong password entirely", FROM)
    assert counting.verifications == 3
    # Locked: even the right password is not checked, and the refusal says how long to wait.
    with pytest.raises(TooManyRequests) as refused:
        await locked.authenticate("locked@keel.example", PASSWORD, FROM)
    assert refused.value.limit == "account"
    assert refused.value.retry_after == 30
    assert counting.verifications == 3
    [fail_max] = await audit_rows(database, "authn_login_fail_max")
    assert fail_max.target_id == user_id
    assert json.loads(fail_max.details) == {"failures": 3}
    [lock] = await audit_rows(database, "authn_login_lock")
    assert lock.target_id == user_id
    assert lock.result == "failure"
    assert lock.source_ip == "192.0.2.10"
    assert json.loads(lock.details) == {
        "limit": "account",
        "retry_after": 30,
        "operation": "login",
    }


async def test_other_limits_are_audited_as_rate_limit_exceeded(
    guarded: AccountService, guard: FakeGuard, database: Database
) -> None:
    async def refuse(account_key: str, source_ip: str | None) -> int:
        raise TooManyRequests(5, limit="ip")

    guard.reserve = refuse  # type: ignore[method-assign]
    with pytest.raises(TooManyRequests):
        await guarded.authenticate("someone@keel.example", PASSWORD, FROM)
    [row] = await audit_rows(database, "excess_rate_limit_exceeded")
    assert row.target_id is None  # unknown address: no target, and never the address itself
    assert json.loads(row.details) == {"limit": "ip", "retry_after": 5, "operation": "login"}
    assert await audit_rows(database, "authn_login_lock") == []


async def test_login_starts_a_session_in_its_transaction(
    guarded: AccountService, sessions: FakeSessions
) -> None:
    user_id = await _verified(guarded, "session@keel.example")
    result = await guarded.login("session@keel.example", PASSWORD, FROM)
    assert sessions.started == [(user_id, result.session_id, frozenset({"user"}))]
    assert result.refresh_token == f"refresh-{result.session_id}"
    # authenticate() checks credentials only: no session.
    await guarded.authenticate("session@keel.example", PASSWORD, FROM)
    assert len(sessions.started) == 1


async def test_login_without_session_hooks_has_no_refresh_token(
    service: AccountService,
) -> None:
    await _verified(service, "plain@keel.example")
    result = await service.login("plain@keel.example", PASSWORD, NO_ORIGIN)
    assert result.refresh_token is None


async def test_delete_account_revokes_sessions(
    guarded: AccountService, sessions: FakeSessions
) -> None:
    user_id = await _verified(guarded, "gone@keel.example")
    await guarded.login("gone@keel.example", PASSWORD, FROM)
    await guarded.delete_account(user_id, PASSWORD, FROM)
    [call] = sessions.revoke_calls
    assert (call.user_id, call.reason, call.keep) == (user_id, "deleted", None)
    assert sessions.sessions_of(user_id) == []
