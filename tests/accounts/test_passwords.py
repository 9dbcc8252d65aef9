"""Password change, forgot and reset, and admin state changes in ``AccountService``.

On real SQLite and PostgreSQL, with recording session hooks and login guard
(``_hooks``). SEC-08 change, SEC-12/25/26 forgot, SEC-25/27/15 reset.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from keel._clock import FrozenClock
from keel.accounts import (
    NO_ORIGIN,
    AccountService,
    CallerOrigin,
    FileMailer,
    InvalidCredentials,
    OwnAdminAccess,
    PasswordResetToken,
    ReauthenticationFailed,
    ResetTokenInvalid,
    UnknownRole,
    User,
    UserNotFound,
    load_user_state,
)
from keel.db import Database
from keel.errors import TooManyRequests
from keel.security.passwords import PasswordRejected
from keel.settings import Settings

from ._accounts import PASSWORD, _verified, audit_rows
from ._hooks import FakeGuard, FakeSessions
from ._service import ServiceFactory

NEW = "another long passphrase 9 ways"
FROM = CallerOrigin(source_ip="192.0.2.20", user_agent="pytest", request_id="req-2")
_LINK = re.compile(r"^https://app\.keel\.example/reset-password#token=([A-Za-z0-9_-]+)$")


async def _mail(service: AccountService) -> list[dict[str, Any]]:
    outbox = service.outbox
    assert outbox is not None
    await outbox.drain()
    mailer = outbox.mailer
    assert isinstance(mailer, FileMailer)
    return mailer.read()


async def _reset_token(service: AccountService, to: str) -> str:
    for message in reversed(await _mail(service)):
        if message["kind"] == "password_reset" and message["to"] == to:
            [token] = [
                m.group(1) for line in message["body"].splitlines() if (m := _LINK.match(line))
            ]
            return token
    raise AssertionError("no reset mail")


async def _reset_rows(database: Database) -> list[PasswordResetToken]:
    async with database.unit_of_work() as uow:
        return list((await uow.session.execute(select(PasswordResetToken))).scalars())


@pytest.fixture
def service(guarded: AccountService) -> AccountService:
    return guarded


# --- change (SEC-08) --------------------------------------------------------------------------


async def test_sec_08_wrong_current_password_counts_and_is_audited(
    service: AccountService, guard: FakeGuard, database: Database
) -> None:
    user_id = await _verified(service, "change@keel.example")
    with pytest.raises(ReauthenticationFailed) as refused:
        await service.change_password(user_id, "not the password", NEW, FROM)
    assert refused.value.code == "current_password_invalid"
    assert guard.failures["change@keel.example"] == 1
    [row] = await audit_rows(database, "authn_password_change_fail")
    assert (row.actor_id, row.target_id, row.result) == (user_id, user_id, "failure")
    assert row.source_ip == "192.0.2.20"
    # Nothing changed: the old password still works.
    await service.authenticate("change@keel.example", PASSWORD, NO_ORIGIN)


async def test_sec_08_a_locked_account_cannot_guess_through_the_change_form(
    service: AccountService, guard: FakeGuard, database: Database
) -> None:
    user_id = await _verified(service, "guess@keel.example")
    for _ in range(3):
        with pytest.raises(ReauthenticationFailed):
            await service.change_password(user_id, "not the password", NEW, FROM)
    with pytest.raises(TooManyRequests):
        await service.change_password(user_id, PASSWORD, NEW, FROM)
    [lock] = await audit_rows(database, "authn_login_lock")
    assert json.loads(lock.details)["operation"] == "password_change"
    assert len(await audit_rows(database, "authn_login_fail_max")) == 1


async def test_sec_08_change_revokes_other_sessions_and_keeps_this_one(
    service: AccountService,
    sessions: FakeSessions,
    database: Database,
    clock: FrozenClock,
) -> None:
    user_id = await _verified(service, "keep@keel.example")
    mine = await service.login("keep@keel.example", PASSWORD, FROM)
    other = await service.login("keep@keel.example", PASSWORD, FROM)
    await service.forgot_password("keep@keel.example", FROM)
    pending = await _reset_token(service, "keep@keel.example")
    clock.advance(1.5)
    result = await service.change_password(
        user_id, PASSWORD, NEW, FROM, keep_session=mine.session_id, scopes={"user"}
    )
    [call] = sessions.revoke_calls
    assert (call.reason, call.keep, call.revoked) == (
        "password_change",
        mine.session_id,
        (other.session_id,),
    )
    assert sessions.revoked_batches == [[other.session_id]]
    assert sessions.sessions_of(user_id) == [mine.session_id]
    # The new token continues this session and is not refused by the bump; older ones are.
    assert result.session_id == mine.session_id
    assert result.scopes == frozenset({"user"})
    state = await load_user_state(database, user_id)
    assert state is not None
    assert state.tokens_valid_after == clock.now().replace(microsecond=0)
    [row] = await audit_rows(database, "authn_password_change")
    assert row.actor_id == user_id
    assert json.loads(row.details) == {"via": "change", "sessions_revoked": 1}
    mail = [m for m in await _mail(service) if m["kind"] == "password_changed"]
    assert [m["to"] for m in mail] == ["keep@keel.example"]
    assert NEW not in mail[0]["body"]
    assert "#token=" not in mail[0]["body"]
    # The new password works, the old does not, and the pending reset link died (SEC-25).
    await service.authenticate("keep@keel.example", NEW, NO_ORIGIN)
    with pytest.raises(InvalidCredentials):
        await service.authenticate("keep@keel.example", PASSWORD, NO_ORIGIN)
    with pytest.raises(ResetTokenInvalid):
        await service.reset_password(pending, "a third passphrase for this", FROM)


async def test_sec_08_the_new_password_goes_through_the_policy(
    service: AccountService, sessions: FakeSessions
) -> None:
    user_id = await _verified(service, "policy@keel.example")
    with pytest.raises(PasswordRejected):
        await service.change_password(user_id, PASSWORD, "short", FROM)
    with pytest.raises(PasswordRejected):
        await service.change_password(user_id, PASSWORD, "policy@keel.example!", FROM)
    assert sessions.revoke_calls == []
    await service.authenticate("policy@keel.example", PASSWORD, NO_ORIGIN)


async def test_sec_08_token_scopes_never_widen(service: AccountService) -> None:
    user_id = await _verified(service, "narrow@keel.example")
    result = await service.change_password(user_id, PASSWORD, NEW, FROM, scopes={"user", "admin"})
    assert result.scopes == frozenset({"user"})  # the account lacks admin
    fresh = await service.change_password(user_id, NEW, PASSWORD, FROM, scopes=set())
    assert fresh.scopes == frozenset()
    assert fresh.session_id != result.session_id  # no session to keep: a new id


# --- forgot (SEC-12, SEC-25) ------------------------------------------------------------------


async def test_sec_25_reset_token_is_long_random_and_stored_hashed(
    service: AccountService, database: Database, clock: FrozenClock
) -> None:
    user_id = await _verified(service, "hash@keel.example")
    await service.forgot_password("Hash@keel.example", FROM)
    token = await _reset_token(service, "hash@keel.example")
    assert len(token) >= 43  # 32 bytes, base64url: 256 bits
    [row] = await _reset_rows(database)
    assert str(row.user_id) == user_id
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.expires_at == clock.now() + timedelta(hours=1)
    async with database.unit_of_work() as uow:
        dump = json.dumps(
            [
                [str(value) for value in r]
                for r in (await uow.session.execute(select(PasswordResetToken.__table__))).all()
            ]
        )
    assert token not in dump
    [audit] = await audit_rows(database, "authn_password_reset_request")
    assert (audit.target_id, audit.result) == (user_id, "success")
    assert token not in audit.details


async def test_sec_12_forgot_for_unknown_disabled_and_malformed_addresses(
    service: AccountService, database: Database
) -> None:
    user_id = await _verified(service, "off@keel.example")
    async with database.unit_of_work() as uow:
        await uow.session.execute(
            update(User).where(User.id == uuid.UUID(user_id)).values(is_active=False)
        )
    for address in ("nobody@keel.example", "off@keel.example", "not an address"):
        await service.forgot_password(address, FROM)  # no exception, whatever the address
    assert await _reset_rows(database) == []
    assert [m for m in await _mail(service) if m["kind"] == "password_reset"] == []
    rows = await audit_rows(database, "authn_password_reset_request")
    assert [(r.result, r.target_id, json.loads(r.details)) for r in rows] == [
        ("failure", None, {"reason": "unknown_user"}),
        ("failure", user_id, {"reason": "account_unavailable"}),
        ("failure", None, {"reason": "unknown_user"}),
    ]


async def test_sec_25_a_newer_request_invalidates_the_older_link(
    service: AccountService, database: Database
) -> None:
    await _verified(service, "newer@keel.example")
    await service.forgot_password("newer@keel.example", FROM)
    older = await _reset_token(service, "newer@keel.example")
    await service.forgot_password("newer@keel.example", FROM)
    newer = await _reset_token(service, "newer@keel.example")
    assert older != newer
    assert len(await _reset_rows(database)) == 1
    with pytest.raises(ResetTokenInvalid):
        await service.reset_password(older, NEW, FROM)
    await service.reset_password(newer, NEW, FROM)


# --- reset (SEC-25, SEC-27, SEC-15) -----------------------------------------------------------


async def test_sec_25_single_use(service: AccountService, database: Database) -> None:
    await _verified(service, "once@keel.example")
    await service.forgot_password("once@keel.example", FROM)
    token = await _reset_token(service, "once@keel.example")
    await service.reset_password(token, NEW, FROM)
    with pytest.raises(ResetTokenInvalid) as second:
        await service.reset_password(token, "a third passphrase for this", FROM)
    assert second.value.code == "reset_token_invalid"
    await service.authenticate("once@keel.example", NEW, NO_ORIGIN)
    failures = await audit_rows(database, "authn_password_change_fail")
    assert [json.loads(r.details) for r in failures] == [{"via": "reset", "reason": "used"}]


async def test_sec_25_concurrent_redemptions_succeed_once(service: AccountService) -> None:
    await _verified(service, "race-reset@keel.example")
    await service.forgot_password("race-reset@keel.example", FROM)
    token = await _reset_token(service, "race-reset@keel.example")
    outcomes = await asyncio.gather(
        *(service.reset_password(token, f"{NEW} {n}", FROM) for n in range(3)),
        return_exceptions=True,
    )
    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(o, ResetTokenInvalid) for o in outcomes if o is not None)


async def test_sec_25_expiry(service: AccountService, clock: FrozenClock) -> None:
    await _verified(service, "late@keel.example")
    await service.forgot_password("late@keel.example", FROM)
    token = await _reset_token(service, "late@keel.example")
    clock.advance(61 * 60)
    with pytest.raises(ResetTokenInvalid):
        await service.reset_password(token, NEW, FROM)
    await service.authenticate("late@keel.example", PASSWORD, NO_ORIGIN)


async def test_sec_25_ttl_is_configurable_and_capped(
    service_factory: ServiceFactory, clock: FrozenClock
) -> None:
    short = service_factory(password_reset_ttl=600)
    await _verified(short, "short@keel.example")
    await short.forgot_password("short@keel.example", FROM)
    token = await _reset_token(short, "short@keel.example")
    clock.advance(601)
    with pytest.raises(ResetTokenInvalid):
        await short.reset_password(token, NEW, FROM)
    # The cap (SEC-25: one hour) is the setting's bound, declared once in its section.
    with pytest.raises(ValidationError, match="KEEL_PASSWORD_RESET_TTL"):
        Settings(password_reset_ttl=3601)


@pytest.mark.parametrize("token", ["", "x" * 43, "short", "a" * 42 + "!", "ä" * 43])
async def test_sec_25_malformed_or_unknown_tokens(service: AccountService, token: str) -> None:
    with pytest.raises(ResetTokenInvalid):
        await service.reset_password(token, NEW, FROM)


async def test_sec_27_reset_revokes_everything_notifies_and_does_not_log_in(
    service: AccountService,
    sessions: FakeSessions,
    database: Database,
    clock: FrozenClock,
) -> None:
    user_id = await _verified(service, "reset@keel.example")
    first = await service.login("reset@keel.example", PASSWORD, FROM)
    second = await service.login("reset@keel.example", PASSWORD, FROM)
    await service.forgot_password("reset@keel.example", FROM)
    token = await _reset_token(service, "reset@keel.example")
    clock.advance(1)
    await service.reset_password(token, NEW, FROM)
    [call] = sessions.revoke_calls
    assert (call.reason, call.keep) == ("password_reset", None)
    assert set(call.revoked) == {first.session_id, second.session_id}
    assert sessions.sessions_of(user_id) == []
    state = await load_user_state(database, user_id)
    assert state is not None
    assert state.tokens_valid_after == clock.now().replace(microsecond=0)
    [row] = await audit_rows(database, "authn_password_change")
    assert json.loads(row.details) == {
        "via": "reset",
        "sessions_revoked": 2,
        "email_verified": False,
    }
    [notice] = [m for m in await _mail(service) if m["kind"] == "password_changed"]
    assert notice["to"] == "reset@keel.example"
    assert "#token=" not in notice["body"]
    [used] = await _reset_rows(database)
    assert used.used_at == clock.now()


async def test_reset_marks_an_unverified_address_verified(
    service: AccountService, database: Database
) -> None:
    await service.register("unverified@keel.example", PASSWORD, None, NO_ORIGIN)
    with pytest.raises(InvalidCredentials):
        await service.authenticate("unverified@keel.example", PASSWORD, NO_ORIGIN)
    await service.forgot_password("unverified@keel.example", FROM)
    await service.reset_password(await _reset_token(service, "unverified@keel.example"), NEW, FROM)
    await service.authenticate("unverified@keel.example", NEW, NO_ORIGIN)


async def test_reset_refuses_a_disabled_account_and_keeps_a_token_the_policy_refused(
    service: AccountService, database: Database
) -> None:
    user_id = await _verified(service, "later-off@keel.example")
    await service.forgot_password("later-off@keel.example", FROM)
    token = await _reset_token(service, "later-off@keel.example")
    with pytest.raises(PasswordRejected):
        await service.reset_password(token, "short", FROM)
    async with database.unit_of_work() as uow:
        await uow.session.execute(
            update(User).where(User.id == uuid.UUID(user_id)).values(is_active=False)
        )
    with pytest.raises(ResetTokenInvalid):
        await service.reset_password(token, NEW, FROM)
    reasons = [
        json.loads(r.details)["reason"]
        for r in await audit_rows(database, "authn_password_change_fail")
    ]
    assert reasons == ["account_unavailable"]


async def test_sec_15_reset_works_for_a_locked_account_and_ends_the_lock(
    service: AccountService, guard: FakeGuard
) -> None:
    await _verified(service, "lockout@keel.example")
    for _ in range(3):
        with pytest.raises(InvalidCredentials):
            await service.authenticate("lockout@keel.example", "attacker guess here", FROM)
    with pytest.raises(TooManyRequests):
        await service.authenticate("lockout@keel.example", PASSWORD, FROM)
    await service.forgot_password("lockout@keel.example", FROM)
    await service.reset_password(await _reset_token(service, "lockout@keel.example"), NEW, FROM)
    assert ("clear", "lockout@keel.example", None) in guard.calls
    await service.authenticate("lockout@keel.example", NEW, FROM)


# --- admin state ------------------------------------------------------------------------------


async def test_admin_disables_and_enables_a_user(
    service: AccountService,
    sessions: FakeSessions,
    database: Database,
    clock: FrozenClock,
) -> None:
    admin = await service.create_admin("root@keel.example", PASSWORD)
    user_id = await _verified(service, "member@keel.example")
    await service.login("member@keel.example", PASSWORD, FROM)
    clock.advance(2)
    view = await service.set_active(admin.id, user_id, False, FROM)
    assert not view.is_active
    [call] = sessions.revoke_calls
    assert (call.user_id, call.reason) == (user_id, "disabled")
    assert sessions.sessions_of(user_id) == []
    state = await load_user_state(database, user_id)
    assert state is not None
    assert not state.active
    assert state.tokens_valid_after == clock.now().replace(microsecond=0)
    with pytest.raises(InvalidCredentials):
        await service.authenticate("member@keel.example", PASSWORD, NO_ORIGIN)
    [row] = await audit_rows(database, "user_updated")
    assert (row.actor_id, row.target_id) == (admin.id, user_id)
    assert json.loads(row.details) == {
        "fields": ["is_active"],
        "active": False,
        "via": "admin",
        "sessions_revoked": 1,
    }
    assert (await service.set_active(admin.id, user_id, True, FROM)).is_active
    await service.authenticate("member@keel.example", PASSWORD, NO_ORIGIN)
    # Setting what is already set changes nothing and records nothing.
    await service.set_active(admin.id, user_id, True, FROM)
    assert len(await audit_rows(database, "user_updated")) == 2


async def test_admin_sets_roles(service: AccountService, database: Database) -> None:
    admin = await service.create_admin("root2@keel.example", PASSWORD)
    user_id = await _verified(service, "promoted@keel.example")
    view = await service.set_roles(admin.id, user_id, ["admin", "user"], FROM)
    assert view.roles == ("admin", "user")
    state = await load_user_state(database, user_id)
    assert state is not None
    assert state.scopes == frozenset({"admin", "user"})
    [row] = await audit_rows(database, "authz_change")
    assert (row.actor_id, row.target_id, row.result) == (admin.id, user_id, "success")
    assert json.loads(row.details) == {"roles_before": ["user"], "roles": ["admin", "user"]}
    with pytest.raises(UnknownRole):
        await service.set_roles(admin.id, user_id, ["superuser"], FROM)


async def test_admin_cannot_lock_themselves_out(
    service: AccountService, database: Database
) -> None:
    admin = await service.create_admin("self@keel.example", PASSWORD)
    with pytest.raises(OwnAdminAccess):
        await service.set_active(admin.id, admin.id, False, FROM)
    with pytest.raises(OwnAdminAccess):
        await service.set_roles(admin.id, admin.id, ["user"], FROM)
    state = await load_user_state(database, admin.id)
    assert state is not None
    assert state.active
    assert state.scopes == frozenset({"admin", "user"})
    failures = [r for r in await audit_rows(database, "authz_change") if r.result == "failure"]
    failures += [r for r in await audit_rows(database, "user_updated") if r.result == "failure"]
    assert len(failures) == 2
    # Keeping their own admin role while changing other roles is fine.
    await service.set_roles(admin.id, admin.id, ["admin"], FROM)


async def test_admin_unknown_user(service: AccountService) -> None:
    admin = await service.create_admin("root3@keel.example", PASSWORD)
    for user_id in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(UserNotFound):
            await service.set_active(admin.id, user_id, False, FROM)
        with pytest.raises(UserNotFound):
            await service.admin_view(admin.id, user_id, FROM)
