"""``ChangePropagation``: what a credential or account change does beyond its own rows.

In the change's transaction, the account's sessions are revoked (through
:class:`~keel.accounts.hooks.SessionHooks`, when attached). After the commit,
the revoked sessions' access tokens stop at once, the login guard forgets
the sources it knew (a new password) or the failures it counted (a reset),
and the change listeners (``keel.auth`` writes the subject's new record
through) are told. A follow-up that fails is logged, never raised: the
change stands either way, since ``tokens_valid_after`` and the revoked rows
already refuse the old credentials; the follow-ups only make that faster.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from keel._logging import event
from keel.accounts.hooks import LoginGuard, SessionHooks
from keel.db import UnitOfWork

__all__ = ["ChangePropagation", "UserChanged"]

_log = logging.getLogger("keel.accounts")

UserChanged = Callable[[str], Awaitable[None]]
"""Called with a user id after each commit that changes what a token or a view depends on."""


class ChangePropagation:
    """Sessions, the login guard and the listeners, as account changes reach them."""

    def __init__(
        self,
        *,
        sessions: SessionHooks | None = None,
        guard: LoginGuard | None = None,
        listeners: Sequence[UserChanged] = (),
    ) -> None:
        self._sessions = sessions
        self._guard = guard
        self._listeners = tuple(listeners)

    async def revoke_sessions(
        self, uow: UnitOfWork, user_id: str, *, reason: str, keep: str | None = None
    ) -> list[str]:
        """In ``uow``: revoke the user's sessions (but ``keep``); their ids (none without hooks)."""
        if self._sessions is None:
            return []
        return await self._sessions.revoke_all(uow, user_id=user_id, reason=reason, keep=keep)

    async def sessions_revoked(self, user_id: str, session_ids: Sequence[str]) -> None:
        """After the commit: the revoked sessions' access tokens stop working everywhere."""
        if self._sessions is not None and session_ids:
            await self._after_commit(
                "sessions_revoked", self._sessions.revoked(user_id, session_ids)
            )

    async def forget_known_sources(self, account_key: str) -> None:
        """After a new password: no earlier login source is "known" to the guard any more."""
        if self._guard is not None:
            await self._after_commit(
                "login_guard_forget", self._guard.forget_known_sources(account_key)
            )

    async def clear_failures(self, account_key: str) -> None:
        """After a reset: the guard forgets the account's failures (a reset ends a lockout)."""
        if self._guard is not None:
            await self._after_commit("login_guard_clear", self._guard.clear(account_key))

    async def changed(self, user_id: str) -> None:
        """After a commit: tell every listener (``keel.auth`` writes the new record through)."""
        for listener in self._listeners:
            try:
                await listener(user_id)
            except Exception as exc:  # noqa: BLE001 - the change is committed; report, go on
                event(
                    _log,
                    logging.ERROR,
                    "user_change_listener_failed",
                    user_id=user_id,
                    error=type(exc).__name__,
                )

    async def _after_commit(self, step: str, work: Awaitable[None]) -> None:
        """Run a follow-up of a committed change; a failure is reported, never raised."""
        try:
            await work
        except Exception as exc:  # noqa: BLE001 - the change is committed; report, go on
            event(_log, logging.ERROR, "after_commit_failed", step=step, error=type(exc).__name__)
