"""``PasswordAttempts``: every check of a stored password goes through the login guard.

A login, a password change, an e-mail change and an account deletion alike:
the attempt is counted before its hash runs (:meth:`PasswordAttempts.reserve`;
``TooManyRequests`` when the account or the source must wait, audited), told
after it failed (:meth:`PasswordAttempts.failed`; the failure reaching the
lockout threshold is audited) or succeeded (:meth:`PasswordAttempts.succeeded`;
the count starts over). Without a guard every step is a no-op.
"""

from __future__ import annotations

from keel.accounts.config import AccountSettings
from keel.accounts.errors import ReauthenticationFailed
from keel.accounts.events import AccountEvents
from keel.accounts.hooks import LoginGuard
from keel.accounts.models import User
from keel.accounts.origin import Origin
from keel.audit import Action, ActorType, Result
from keel.errors import TooManyRequests
from keel.metrics import record_lockout, record_login, record_rate_limit_refusal
from keel.security.hashing import PasswordHasher

__all__ = ["PasswordAttempts"]


class PasswordAttempts:
    """The login guard around password checks, with the refusals audited."""

    def __init__(
        self,
        *,
        guard: LoginGuard | None,
        hasher: PasswordHasher,
        events: AccountEvents,
        settings: AccountSettings,
    ) -> None:
        self._guard = guard
        self._hasher = hasher
        self._events = events
        self._settings = settings

    async def reserve(
        self,
        guard_key: str,
        origin: Origin,
        *,
        target_id: str | None,
        operation: str,
        actor_id: str | None = None,
    ) -> int:
        """Count the attempt with the guard before its password check; its failure number.

        A refusal is audited, then re-raised.
        """
        if self._guard is None:
            return 0
        try:
            return await self._guard.reserve(guard_key, origin.source_ip)
        except TooManyRequests as exc:
            locked = exc.limit == "account"
            action = Action.AUTHN_LOGIN_LOCK if locked else Action.EXCESS_RATE_LIMIT_EXCEEDED
            if not locked:
                record_rate_limit_refusal(operation)
            if operation == "login":
                record_login("locked" if locked else "throttled")
            await self._events.refusal(
                self._events.event(
                    action,
                    Result.FAILURE,
                    origin,
                    actor_type=ActorType.USER if actor_id is not None else ActorType.ANONYMOUS,
                    actor_id=actor_id,
                    target_id=target_id,
                    details={
                        "limit": exc.limit,
                        "retry_after": exc.retry_after,
                        "operation": operation,
                    },
                ),
            )
            raise

    async def failed(
        self, guard_key: str, origin: Origin, attempt: int, *, target_id: str | None
    ) -> None:
        """Tell the guard the reserved ``attempt`` failed; audit the one reaching the threshold."""
        if self._guard is None:
            return
        failures = await self._guard.failed(guard_key, origin.source_ip, attempt)
        if failures == self._settings.lockout_threshold:
            record_lockout()
            await self._events.refusal(
                self._events.event(
                    Action.AUTHN_LOGIN_FAIL_MAX,
                    Result.FAILURE,
                    origin,
                    target_id=target_id,
                    details={"failures": failures},
                ),
            )

    async def succeeded(self, guard_key: str, origin: Origin, *, verified: bool) -> None:
        """A right password: the count starts over; a ``verified`` account's source is known."""
        if self._guard is not None:
            await self._guard.succeeded(guard_key, origin.source_ip, remember_source=verified)

    async def reauthenticate(
        self, user: User, password: str, origin: Origin, action: Action, *, operation: str
    ) -> None:
        """Ask for ``password`` again before a sensitive change; refusals audited as ``action``.

        Through the login's limits, as a login: counted before the hash
        (``TooManyRequests`` when the account or the source must wait), a wrong
        password counts as a failed login (``ReauthenticationFailed``), a right
        one resets the count.
        """
        target = str(user.id)
        attempt = await self.reserve(
            user.email_key, origin, target_id=target, operation=operation, actor_id=target
        )
        if not await self._hasher.verify(user.password_hash, password):
            await self.failed(user.email_key, origin, attempt, target_id=target)
            await self._events.refusal(
                self._events.self_event(
                    action,
                    Result.FAILURE,
                    origin,
                    user.id,
                    details={"reason": "reauthentication_failed"},
                ),
            )
            raise ReauthenticationFailed()
        await self.succeeded(user.email_key, origin, verified=user.email_verified_at is not None)
