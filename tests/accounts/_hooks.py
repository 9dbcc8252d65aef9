"""Recording stand-ins for ``SessionHooks`` and ``LoginGuard`` (``keel.auth`` has the real ones).

Also ``CountingHasher``: a real hasher that counts its verifications.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from keel.accounts import Origin
from keel.db import UnitOfWork
from keel.errors import TooManyRequests
from keel.security.hashing import PasswordHasher

__all__ = ["CountingHasher", "FakeGuard", "FakeSessions", "RevokeCall"]


class CountingHasher:
    """Counts the verifications (real and dummy) of a real hasher."""

    def __init__(self, inner: PasswordHasher) -> None:
        self.inner = inner
        self.verifications = 0

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        return await self.inner.verify(password_hash, password)

    async def dummy_verify(self, password: str) -> None:
        self.verifications += 1
        await self.inner.dummy_verify(password)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@dataclass(frozen=True)
class RevokeCall:
    user_id: str
    reason: str
    keep: str | None
    revoked: tuple[str, ...]


@dataclass
class FakeSessions:
    """Sessions in a dict; ``revoke_all`` picks them, ``revoked`` (after the commit) drops them."""

    live: dict[str, str] = field(default_factory=dict)  # session id -> user id
    started: list[tuple[str, str, frozenset[str]]] = field(default_factory=list)
    revoke_calls: list[RevokeCall] = field(default_factory=list)
    revoked_batches: list[list[str]] = field(default_factory=list)

    async def start(
        self,
        uow: UnitOfWork,
        *,
        user_id: str,
        session_id: str,
        scopes: frozenset[str],
        origin: Origin,
    ) -> str:
        assert isinstance(uow, UnitOfWork)
        self.started.append((user_id, session_id, scopes))
        self.live[session_id] = user_id
        return f"refresh-{session_id}"

    async def revoke_all(
        self, uow: UnitOfWork, *, user_id: str, reason: str, keep: str | None = None
    ) -> list[str]:
        assert isinstance(uow, UnitOfWork)
        ids = [sid for sid, owner in self.live.items() if owner == user_id and sid != keep]
        self.revoke_calls.append(RevokeCall(user_id, reason, keep, tuple(ids)))
        return ids

    async def revoked(self, user_id: str, session_ids: Sequence[str]) -> None:
        self.revoked_batches.append(list(session_ids))
        for sid in session_ids:
            self.live.pop(sid, None)

    def sessions_of(self, user_id: str) -> list[str]:
        return [sid for sid, owner in self.live.items() if owner == user_id]


@dataclass
class FakeGuard:
    """Counts failures per account; refuses (limit ``account``) from ``threshold`` failures on."""

    threshold: int = 3
    failures: Counter[str] = field(default_factory=Counter)
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)

    async def reserve(self, account_key: str, source_ip: str | None) -> int:
        self.calls.append(("reserve", account_key, source_ip))
        if self.failures[account_key] >= self.threshold:
            raise TooManyRequests(30, limit="account")
        return self.failures[account_key] + 1

    async def failed(self, account_key: str, source_ip: str | None, attempt: int) -> int:
        self.calls.append(("failed", account_key, source_ip))
        self.failures[account_key] += 1
        return self.failures[account_key]

    async def succeeded(
        self, account_key: str, source_ip: str | None, *, remember_source: bool = True
    ) -> None:
        self.calls.append(("succeeded", account_key, source_ip))
        self.failures.pop(account_key, None)

    async def forget_known_sources(self, account_key: str) -> None:
        self.calls.append(("forget_known_sources", account_key, None))

    async def clear(self, account_key: str) -> None:
        self.calls.append(("clear", account_key, None))
        self.failures.pop(account_key, None)

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.calls]
