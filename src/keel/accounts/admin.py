"""``AdminService``: admins read accounts and change their activity and roles; the first admin.

Every read and change is audited with the admin as the actor (a user, or an
API key with the admin scope). :meth:`AdminService.create_admin` is the only
way keel ever creates an admin (``keel users create-admin``; SEC-09: no
default accounts).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from sqlalchemy.exc import IntegrityError

from keel.accounts.credentials import end_pending_links, move_generation
from keel.accounts.deps import AccountDeps
from keel.accounts.email import normalise_email
from keel.accounts.errors import EmailTaken, OwnAdminAccess, UnknownRole, UserNotFound
from keel.accounts.origin import NO_ORIGIN, Origin
from keel.accounts.repository import AccountRepository
from keel.accounts.roles import ROLE_ADMIN, ROLE_USER, format_roles
from keel.accounts.state import new_user
from keel.accounts.views import UserView
from keel.audit import Action, ActorType, AuditEvent, Result

__all__ = ["AdminService"]

_CLI_ACTOR: Final = "keel-cli"


class AdminService:
    """Account administration: create the first admin, read, enable/disable, set roles."""

    def __init__(self, deps: AccountDeps) -> None:
        self._deps = deps

    async def create_admin(
        self, email: str, password: str, *, origin: Origin = NO_ORIGIN
    ) -> UserView:
        """Create an active, verified account with the ``admin`` role (``keel users create-admin``).

        The only way keel ever creates an admin (SEC-09: no default accounts).
        Raises ``EmailTaken`` when the address already has an account.
        """
        address = normalise_email(email)
        password_hash = await self._deps.passwords.hash(password, address, None)
        now = self._deps.clock.now()
        roles = sorted({ROLE_USER, ROLE_ADMIN})
        try:
            async with self._deps.database.unit_of_work() as uow:
                repo = AccountRepository(uow)
                if await repo.email_key_taken(address.key):
                    raise EmailTaken()
                user = new_user(address, password_hash, roles, now, verified=True)
                repo.add(user)
                await uow.flush()
                await self._deps.events.record(
                    uow,
                    self._deps.events.event(
                        Action.USER_CREATED,
                        Result.SUCCESS,
                        origin,
                        actor_type=ActorType.SYSTEM,
                        actor_id=_CLI_ACTOR,
                        target_id=str(user.id),
                        details={"roles": roles, "via": "create_admin"},
                    ),
                )
                view = UserView.of(user)
        except IntegrityError as exc:
            raise EmailTaken() from exc
        return view

    async def admin_view(
        self,
        admin_id: str,
        user_id: str,
        origin: Origin,
        *,
        actor_type: ActorType = ActorType.USER,
    ) -> UserView:
        """An account as an admin sees it; the read is audited (``authz_admin``) as it happens.

        ``UserNotFound`` for an unknown (or malformed) id. ``actor_type`` is
        the admin's kind (a user, or an API key with the admin scope).
        """
        async with self._deps.database.unit_of_work() as uow:
            user = await AccountRepository(uow).by_id(user_id)
            if user is None:
                raise UserNotFound()
            await self._deps.events.record(
                uow,
                self._deps.events.admin_event(
                    Action.AUTHZ_ADMIN,
                    Result.SUCCESS,
                    origin,
                    admin_id,
                    user.id,
                    actor_type=actor_type,
                    details={"operation": "user_read"},
                ),
            )
            return UserView.of(user)

    async def set_active(
        self, admin_id: str, user_id: str, active: bool, origin: Origin
    ) -> UserView:
        """Enable or disable an account (see :meth:`update_user`)."""
        return await self.update_user(admin_id, user_id, origin, active=active)

    async def set_roles(
        self, admin_id: str, user_id: str, roles: Collection[str], origin: Origin
    ) -> UserView:
        """Replace an account's roles (see :meth:`update_user`)."""
        return await self.update_user(admin_id, user_id, origin, roles=roles)

    async def update_user(
        self,
        admin_id: str,
        user_id: str,
        origin: Origin,
        *,
        active: bool | None = None,
        roles: Collection[str] | None = None,
        actor_type: ActorType = ActorType.USER,
    ) -> UserView:
        """An admin changes an account's activity and/or roles, in one transaction.

        ``roles`` must be known roles (``UnknownRole``). An admin cannot
        disable themselves or drop their own ``admin`` role (``OwnAdminAccess``,
        audited). A role change is ``authz_change``; it takes effect on the
        next request, since tokens carry only scopes the account still holds.
        Disabling moves ``tokens_valid_after`` on and revokes every session
        (``user_updated``). ``UserNotFound`` for an unknown id.
        """
        wanted = frozenset(roles) if roles is not None else None
        if wanted is not None and not wanted <= self._deps.settings.known_roles:
            raise UnknownRole()
        now = self._deps.clock.now()
        revoked: list[str] = []
        refused = False
        changed = False
        async with self._deps.database.unit_of_work() as uow:
            repo = AccountRepository(uow)
            user = await repo.by_id(user_id, for_update=True)
            if user is None:
                raise UserNotFound()
            target = str(user.id)
            if (
                actor_type is ActorType.USER
                and target == admin_id
                and (active is False or (wanted is not None and ROLE_ADMIN not in wanted))
            ):
                refused = True
            else:
                events: list[AuditEvent] = []
                if wanted is not None and wanted != user.role_set:
                    before = sorted(user.role_set)
                    user.roles = format_roles(wanted, self._deps.settings.known_roles)
                    events.append(
                        self._deps.events.admin_event(
                            Action.AUTHZ_CHANGE,
                            Result.SUCCESS,
                            origin,
                            admin_id,
                            target,
                            actor_type=actor_type,
                            details={"roles_before": before, "roles": sorted(wanted)},
                        )
                    )
                if active is not None and active != user.is_active:
                    user.is_active = active
                    if not active:
                        move_generation(user, now)
                        await end_pending_links(repo, user)
                        revoked = await self._deps.propagation.revoke_sessions(
                            uow, target, reason="disabled"
                        )
                    events.append(
                        self._deps.events.admin_event(
                            Action.USER_UPDATED,
                            Result.SUCCESS,
                            origin,
                            admin_id,
                            target,
                            actor_type=actor_type,
                            details={
                                "fields": ["is_active"],
                                "active": active,
                                "via": "admin",
                                "sessions_revoked": len(revoked),
                            },
                        )
                    )
                changed = bool(events)
                if changed:
                    user.updated_at = now
                    await uow.flush()
                for audit_event in events:
                    await self._deps.events.record(uow, audit_event)
            view = UserView.of(user)
        if refused:
            await self._deps.events.record_alone(
                self._deps.events.admin_event(
                    Action.AUTHZ_CHANGE if active is not False else Action.USER_UPDATED,
                    Result.FAILURE,
                    origin,
                    admin_id,
                    view.id,
                    actor_type=actor_type,
                    details={"reason": "own_admin_access"},
                )
            )
            raise OwnAdminAccess()
        if changed:
            await self._deps.propagation.sessions_revoked(view.id, revoked)
            await self._deps.propagation.changed(view.id)
        return view
