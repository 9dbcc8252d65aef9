"""``SessionService`` on real SQLite and PostgreSQL: rotation, reuse, races, lifetimes, revoking."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid

import asyncpg
import pytest
from sqlalchemy import select

from keel.accounts import User
from keel.accounts.hooks import SessionHooks
from keel.audit.models import AuditEventRow
from keel.auth import SubjectState
from keel.auth.models import AuthSession, RefreshTokenRow
from keel.auth.refresh import new_refresh_token, token_hash
from keel.auth.sessions import InvalidRefreshToken, RefreshScopeNotGranted, SessionService
from keel.errors import NotFound

from ._world import ORIGIN, World


async def _audit(world: World, action: str) -> list[AuditEventRow]:
    async with world.database.unit_of_work() as uow:
        rows = await uow.session.scalars(
            select(AuditEventRow).where(AuditEventRow.action == action).order_by(AuditEventRow.seq)
        )
        return list(rows.all())


async def _session(world: World, session_id: str) -> AuthSession:
    async with world.database.unit_of_work() as uow:
        row = await uow.session.get(AuthSession, uuid.UUID(session_id))
        assert row is not None
        return row


async def test_sec_37_tokens_are_random_and_stored_only_as_hashes(world: World) -> None:
    service = world.make()
    user = await world.user()
    _, first = await world.login(service, user)
    second = (await service.refresh(first, ORIGIN)).refresh_token
    assert len(base64.urlsafe_b64decode(first + "=")) == 32  # 256 bits
    async with world.database.unit_of_work() as uow:
        rows = (await uow.session.scalars(select(RefreshTokenRow))).all()
    stored = {row.token_hash for row in rows}
    assert stored == {token_hash(first), token_hash(second)}
    for row in rows:
        for value in (row.token_hash, row.successor_sealed or b""):
            text = value if isinstance(value, str) else value.hex()
            assert first not in text
            assert second not in text
            if isinstance(value, bytes):
                assert first.encode() not in value
                assert second.encode() not in value
    assert len({new_refresh_token() for _ in range(1000)}) == 1000


async def test_sec_37_random_or_malformed_token_is_refused(world: World) -> None:
    service = world.make()
    random_token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    for token in (random_token, "", "short", "x" * 43 + "!", "a" * 44):
        with pytest.raises(InvalidRefreshToken):
            await service.refresh(token, ORIGIN)


async def test_sec_38_every_refresh_rotates(world: World) -> None:
    service = world.make(refresh_grace=0.0)
    user = await world.user()
    session_id, rt1 = await world.login(service, user)
    result = await service.refresh(rt1, ORIGIN)
    rt2 = result.refresh_token
    assert rt2 != rt1
    assert result.session_id == session_id
    claims = world.tokens.verify(result.access_token.token)
    assert claims.subject == user
    assert claims.session_id == session_id
    assert claims.scopes == frozenset({"user"})
    rt3 = (await service.refresh(rt2, ORIGIN)).refresh_token
    assert len({rt1, rt2, rt3}) == 3
    assert (await _session(world, session_id)).generation == 2
    assert len(await _audit(world, "session_renewed")) == 2


async def test_sec_39_reuse_revokes_the_family_and_is_audited(world: World) -> None:
    service = world.make()
    user = await world.user()
    session_id, rt1 = await world.login(service, user)
    rt2 = (await service.refresh(rt1, ORIGIN)).refresh_token
    world.clock.advance(6.0)  # past the default 5 s grace window
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(rt1, ORIGIN)
    # The legitimate holder's live token died with the family.
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(rt2, ORIGIN)
    session = await _session(world, session_id)
    assert session.revoked_at is not None
    assert session.revoked_reason == "token_reuse"
    [reuse] = await _audit(world, "authn_token_reuse")
    assert reuse.target_id == session_id
    assert json.loads(reuse.details)["family"] == session_id
    assert reuse.result == "failure"
    # Its access tokens stop at once: the shared state says the session ended.
    assert await world.ended(user, session_id)


async def test_sec_39_replay_of_an_older_generation_within_grace_is_reuse(world: World) -> None:
    service = world.make()
    user = await world.user()
    session_id, rt1 = await world.login(service, user)
    rt2 = (await service.refresh(rt1, ORIGIN)).refresh_token
    await service.refresh(rt2, ORIGIN)
    # rt1's successor (rt2) is itself rotated: rt1 is no retry, even inside the grace window.
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(rt1, ORIGIN)
    assert (await _session(world, session_id)).revoked_reason == "token_reuse"


async def test_sec_40_concurrent_refreshes_get_one_successor(world: World) -> None:
    service = world.make()
    user = await world.user()
    session_id, rt1 = await world.login(service, user)
    results = await asyncio.gather(*(service.refresh(rt1, ORIGIN) for _ in range(4)))
    successors = {result.refresh_token for result in results}
    assert len(successors) == 1  # never two different live successors
    [rt2] = successors
    session = await _session(world, session_id)
    assert session.revoked_at is None
    assert session.generation == 1
    # The one successor works; the family is intact.
    rt3 = (await service.refresh(rt2, ORIGIN)).refresh_token
    assert rt3 not in {rt1, rt2}


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_refresh_racing_the_end_of_all_its_users_sessions_does_not_deadlock(
    world: World,
) -> None:
    """A disable, a password change or an admin's revocation locks the user's row, then
    ends the user's sessions; a refresh locks its session and must never wait for the
    user's row meanwhile, or each waits for the other (PostgreSQL aborts one: a 500)."""
    service = world.make()
    user = await world.user()
    session_id, token = await world.login(service, user)
    url = world.database.settings.url.get_secret_value()
    change = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        async with change.transaction():
            await change.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", uuid.UUID(user))
            refresh = asyncio.ensure_future(service.refresh(token, ORIGIN))
            await asyncio.wait({refresh}, timeout=10)  # the refresh holds its session by now
            await change.execute(
                "UPDATE sessions SET revoked_at = now(), revoked_reason = 'disabled'"
                " WHERE user_id = $1 AND revoked_at IS NULL",
                uuid.UUID(user),
            )
        refreshed = await refresh
    finally:
        await change.close()
    assert refreshed.session_id == session_id
    session = await _session(world, session_id)
    assert session.generation == 1  # the refresh committed first, then the change ended it
    assert session.revoked_reason == "disabled"


async def test_sec_40_without_grace_exactly_one_winner(world: World) -> None:
    service = world.make(refresh_grace=0.0)
    user = await world.user()
    _, rt1 = await world.login(service, user)
    world.clock.advance(0.001)
    outcomes = await asyncio.gather(
        service.refresh(rt1, ORIGIN), service.refresh(rt1, ORIGIN), return_exceptions=True
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, InvalidRefreshToken)]
    assert len(winners) == 1
    assert len(losers) == 1


async def test_sec_40_retry_after_the_grace_window_is_reuse(world: World) -> None:
    service = world.make(refresh_grace=2.0)
    user = await world.user()
    session_id, rt1 = await world.login(service, user)
    first = await service.refresh(rt1, ORIGIN)
    world.clock.advance(1.0)
    again = await service.refresh(rt1, ORIGIN)
    assert again.refresh_token == first.refresh_token
    world.clock.advance(1.5)
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(rt1, ORIGIN)
    assert (await _session(world, session_id)).revoked_reason == "token_reuse"


async def test_sec_41_idle_timeout(world: World) -> None:
    service = world.make(idle_ttl=3600, absolute_ttl=24 * 3600)
    user = await world.user()
    session_id, rt1 = await world.login(service, user)
    world.clock.advance(3599)
    rt2 = (await service.refresh(rt1, ORIGIN)).refresh_token  # activity moves the idle expiry
    world.clock.advance(3600)
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(rt2, ORIGIN)
    session = await _session(world, session_id)
    assert session.revoked_reason == "expired"
    assert len(await _audit(world, "session_expired")) == 1


async def test_sec_41_absolute_lifetime(world: World) -> None:
    service = world.make(idle_ttl=3600, absolute_ttl=4 * 3600)
    user = await world.user()
    _, token = await world.login(service, user)
    refreshes = 0
    refused: InvalidRefreshToken | None = None
    while refused is None and refreshes < 100:
        world.clock.advance(300)  # every 5 minutes
        try:
            token = (await service.refresh(token, ORIGIN)).refresh_token
            refreshes += 1
        except InvalidRefreshToken as exc:
            refused = exc
    assert refused is not None
    assert refreshes == 4 * 3600 // 300 - 1  # the refresh at exactly 4 h is refused


async def test_refresh_refused_for_a_disabled_user_but_not_for_a_bump_alone(
    world: World,
) -> None:
    service = world.make()
    user = await world.user()
    state = world.states[user]
    assert state is not None
    # A password change that keeps this session bumps "tokens valid after": it lives on.
    kept, token = await world.login(service, user)
    world.clock.advance(2)
    async with world.database.unit_of_work() as uow:
        await service.revoke_all(uow, user_id=user, reason="password_change", keep=kept)
    bumped = SubjectState(True, world.clock.now().replace(microsecond=0), state.scopes)
    world.states[user] = bumped
    token = (await service.refresh(token, ORIGIN)).refresh_token
    # Disabled: the session ends at its next refresh.
    disabled = SubjectState(False, bumped.tokens_valid_after, state.scopes)
    world.states[user] = disabled
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(token, ORIGIN)
    assert (await _session(world, kept)).revoked_reason == "subject_inactive"


async def test_access_token_scopes_follow_the_users_current_roles(world: World) -> None:
    service = world.make()
    user = await world.user(roles="admin user")
    _, token = await world.login(service, user, frozenset({"admin", "user"}))
    result = await service.refresh(token, ORIGIN, scopes=["user"])
    assert world.tokens.verify(result.access_token.token).scopes == frozenset({"user"})
    with pytest.raises(RefreshScopeNotGranted):
        await service.refresh(result.refresh_token, ORIGIN, scopes=["superuser"])
    demoted = SubjectState(True, world.clock.now().replace(microsecond=0), frozenset({"user"}))
    world.clock.advance(1)
    world.states[user] = demoted
    again = await service.refresh(result.refresh_token, ORIGIN)
    assert world.tokens.verify(again.access_token.token).scopes == frozenset({"user"})


async def test_logout_ends_the_session_everywhere(world: World) -> None:
    service = world.make()
    user = await world.user()
    session_id, token = await world.login(service, user)
    await service.logout(user, session_id, ORIGIN)
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(token, ORIGIN)
    assert await world.ended(user, session_id)
    assert (await _session(world, session_id)).revoked_reason == "logout"
    assert len(await _audit(world, "session_logout")) == 1


async def test_sec_42_list_and_revoke_own_sessions(world: World) -> None:
    service = world.make()
    user = await world.user()
    first, token_a = await world.login(service, user)
    world.clock.advance(1)
    second, token_b = await world.login(service, user)
    listed = await service.list_sessions(user)
    assert [info.id for info in listed] == [first, second]
    assert listed[0].user_agent == "pytest"
    assert listed[0].source_ip == "192.0.2.10"
    await service.revoke(user, first, ORIGIN)
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(token_a, ORIGIN)
    await service.refresh(token_b, ORIGIN)
    assert [info.id for info in await service.list_sessions(user)] == [second]


async def test_sec_47_another_users_session_is_not_found(world: World) -> None:
    service = world.make()
    alice, bob = await world.user(), await world.user()
    bobs, token = await world.login(service, bob)
    for session_id in (bobs, str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(NotFound):
            await service.revoke(alice, session_id, ORIGIN)
    await service.refresh(token, ORIGIN)  # untouched


async def test_sec_42_admin_revokes_all_and_revoke_all_keeps_the_current(world: World) -> None:
    service = world.make()
    user = await world.user()
    keep, token_keep = await world.login(service, user)
    gone, token_gone = await world.login(service, user)
    async with world.database.unit_of_work() as uow:
        ids = await service.revoke_all(uow, user_id=user, reason="password_change", keep=keep)
    assert ids == [gone]
    await service.revoked(user, ids)
    assert await world.ended(user, gone)
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(token_gone, ORIGIN)
    token_keep = (await service.refresh(token_keep, ORIGIN)).refresh_token
    admin = await world.user(roles="admin user")
    assert await service.revoke_user(admin, user, ORIGIN) == 1
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(token_keep, ORIGIN)
    [row] = await _audit(world, "authn_token_revoked")
    assert row.actor_id == admin
    assert row.target_id == user


async def test_sessions_go_with_their_user(world: World) -> None:
    service = world.make()
    user = await world.user()
    session_id, _ = await world.login(service, user)
    async with world.database.unit_of_work() as uow:
        row = await uow.session.get(User, uuid.UUID(user))
        assert row is not None
        await uow.session.delete(row)
    async with world.database.unit_of_work() as uow:
        assert await uow.session.get(AuthSession, uuid.UUID(session_id)) is None
        assert (await uow.session.scalars(select(RefreshTokenRow))).all() == []


def test_idle_lifetime_cannot_exceed_the_absolute_one(world: World) -> None:
    with pytest.raises(ValueError, match="idle"):
        world.make(idle_ttl=7200, absolute_ttl=3600)


def test_session_service_is_the_accounts_session_hooks() -> None:
    hooks: SessionHooks = SessionService.__new__(SessionService)
    assert callable(hooks.start)
    assert callable(hooks.revoke_all)
    assert callable(hooks.revoked)


async def test_refresh_refuses_a_session_older_than_the_users_credentials(world: World) -> None:
    service = world.make()
    user = await world.user()
    state = world.states[user]
    assert state is not None
    # A session whose login was checked against credentials that changed since (one a
    # revocation missed): its refresh token dies at its next use.
    escaped, token = await world.login(service, user)
    world.clock.advance(2)
    world.states[user] = SubjectState(True, world.clock.now().replace(microsecond=0), state.scopes)
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(token, ORIGIN)
    assert (await _session(world, escaped)).revoked_reason == "credentials_changed"
    # A session started after the change lives on; so does one a password change kept.
    kept, token = await world.login(service, user)
    token = (await service.refresh(token, ORIGIN)).refresh_token
    world.clock.advance(2)
    async with world.database.unit_of_work() as uow:
        await service.revoke_all(uow, user_id=user, reason="password_change", keep=kept)
    world.states[user] = SubjectState(True, world.clock.now().replace(microsecond=0), state.scopes)
    await service.refresh(token, ORIGIN)


@pytest.mark.parametrize("cause", ["subject_inactive", "credentials_changed"])
async def test_a_session_a_refresh_ends_for_the_users_state_is_audited(
    world: World, cause: str
) -> None:
    """Every way a session ends leaves an audit event: here, a refresh finding the user
    disabled, or the session older than the user's credentials (a change a revocation
    missed, e.g. one made straight in the database)."""
    service = world.make()
    user = await world.user()
    state = world.states[user]
    assert state is not None
    ended, token = await world.login(service, user)
    world.clock.advance(2)
    after = world.clock.now().replace(microsecond=0)
    world.states[user] = (
        SubjectState(False, state.tokens_valid_after, state.scopes)
        if cause == "subject_inactive"
        else SubjectState(True, after, state.scopes)
    )
    before = len(await _audit(world, "authn_token_revoked"))
    with pytest.raises(InvalidRefreshToken):
        await service.refresh(token, ORIGIN)
    assert (await _session(world, ended)).revoked_reason == cause
    events = await _audit(world, "authn_token_revoked")
    assert len(events) == before + 1
    event = events[-1]
    assert (event.target_type, event.target_id) == ("session", ended)
    assert event.actor_type == "system"
    assert json.loads(event.details) == {"reason": cause, "via": "refresh", "user_id": user}
