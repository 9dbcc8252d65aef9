"""``AccountService`` on real SQLite and PostgreSQL: user state, races, listeners, admins."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from keel._clock import FrozenClock
from keel.accounts import (
    NO_ORIGIN,
    AccountService,
    EmailTaken,
    InvalidCredentials,
    User,
    UserState,
    VerificationFailed,
    load_user_state,
)
from keel.audit.models import AuditEventRow
from keel.db import Database
from keel.security.passwords import PasswordRejected

from ._accounts import PASSWORD, _token, _verified
from ._service import ServiceFactory


async def _count(database: Database, model: type[User] | type[AuditEventRow]) -> int:
    async with database.unit_of_work() as uow:
        return int(
            (await uow.session.execute(select(func.count()).select_from(model))).scalar_one()
        )


async def test_load_user_state(
    service: AccountService, database: Database, clock: FrozenClock
) -> None:
    clock.advance(0.75)  # a fraction of a second: tokens_valid_after keeps whole seconds
    user_id = await _verified(service, "state@keel.example")
    state = await load_user_state(database, user_id)
    assert state == UserState(
        user_id=user_id,
        active=True,
        tokens_valid_after=clock.now().replace(microsecond=0),
        scopes=frozenset({"user"}),
    )
    async with database.unit_of_work() as uow:
        assert await load_user_state(uow, user_id) == state
        await uow.session.execute(
            update(User).where(User.id == uuid.UUID(user_id)).values(is_active=False)
        )
        inactive = await load_user_state(uow, user_id)
        assert inactive is not None
        assert not inactive.active
    assert await load_user_state(database, str(uuid.uuid4())) is None
    assert await load_user_state(database, "not-a-uuid") is None
    assert await load_user_state(database, "' OR 1=1 --") is None


async def test_concurrent_registrations_make_one_account(
    service: AccountService, database: Database
) -> None:
    await asyncio.gather(
        *(
            service.register(email, PASSWORD, None, NO_ORIGIN)
            for email in ("race@keel.example", "Race@keel.example", "RACE@keel.example")
        )
    )
    assert await _count(database, User) == 1
    async with database.unit_of_work() as uow:
        actions = (await uow.session.execute(select(AuditEventRow.result))).scalars().all()
    assert sorted(actions) == ["failure", "failure", "success"]


async def test_concurrent_verifications_succeed_once(service: AccountService) -> None:
    await service.register("twice@keel.example", PASSWORD, None, NO_ORIGIN)
    token = await _token(service, "twice@keel.example")
    outcomes = await asyncio.gather(
        *(service.verify_email(token, NO_ORIGIN) for _ in range(3)), return_exceptions=True
    )
    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(o, VerificationFailed) for o in outcomes if o is not None)


async def test_verification_expiry_boundary(service: AccountService, clock: FrozenClock) -> None:
    await service.register("edge@keel.example", PASSWORD, None, NO_ORIGIN)
    token = await _token(service, "edge@keel.example")
    clock.advance(timedelta(hours=24).total_seconds() - 1)
    await service.verify_email(token, NO_ORIGIN)


async def test_change_listener_failure_does_not_undo_the_change(
    service_factory: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    async def broken(changed: str) -> None:
        calls.append(changed)
        raise RuntimeError("cache down")

    async def working(changed: str) -> None:
        calls.append("second:" + changed)

    service = service_factory(on_user_changed=[broken, working])
    user_id = await _verified(service, "listener@keel.example")
    calls.clear()  # the verification told them too
    with caplog.at_level(logging.ERROR, logger="keel.accounts"):
        view = await service.update_profile(user_id, NO_ORIGIN, display_name="Still Saved")
    assert view.display_name == "Still Saved"
    assert calls == [user_id, "second:" + user_id]
    assert "user_change_listener_failed" in [r.getMessage() for r in caplog.records]
    assert (await service.profile(user_id)).display_name == "Still Saved"


async def test_unchanged_profile_writes_nothing(
    service: AccountService, database: Database
) -> None:
    user_id = await _verified(service, "same@keel.example")
    await service.update_profile(user_id, NO_ORIGIN, display_name="Same")
    rows = await _count(database, AuditEventRow)
    await service.update_profile(user_id, NO_ORIGIN, display_name="Same")
    await service.update_profile(user_id, NO_ORIGIN, email="same@keel.example")
    assert await _count(database, AuditEventRow) == rows


async def test_create_admin(service: AccountService, database: Database) -> None:
    view = await service.create_admin("Root@Keel.example", PASSWORD)
    assert view.roles == ("admin", "user")
    assert view.email_verified
    state = await load_user_state(database, view.id)
    assert state is not None
    assert state.scopes == {"admin", "user"}
    result = await service.login("root@keel.example", PASSWORD, NO_ORIGIN)
    assert result.scopes == {"admin", "user"}
    async with database.unit_of_work() as uow:
        created = (
            await uow.session.execute(
                select(AuditEventRow).where(AuditEventRow.action == "user_created")
            )
        ).scalar_one()
    assert (created.actor_type, created.actor_id, created.target_id) == (
        "system",
        "keel-cli",
        view.id,
    )
    with pytest.raises(EmailTaken):
        await service.create_admin("root@keel.example", PASSWORD)
    with pytest.raises(PasswordRejected):
        await service.create_admin("other@keel.example", "password1234567")
    assert await _count(database, User) == 1


async def test_require_verified_email_can_be_turned_off(
    service: AccountService, service_factory: ServiceFactory
) -> None:
    await service.register("lax@keel.example", PASSWORD, None, NO_ORIGIN)
    with pytest.raises(InvalidCredentials):
        await service.login("lax@keel.example", PASSWORD, NO_ORIGIN)
    lax = service_factory(require_verified_email=False)
    result = await lax.login("lax@keel.example", PASSWORD, NO_ORIGIN)
    assert result.scopes == {"user"}
