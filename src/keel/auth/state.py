"""``SecurityState``: may this subject's token, in this session, be used? From the record, fast.

The database is the record of every fact an access token is checked
against: the user's row (active, tokens valid after, roles) and the session's
row (revoked or not). A revocation is committed there, in the transaction of
the change, before anyone is told. Caches only accelerate, in three tiers:

1. a per-worker *near cache* (only in front of a remote store, Redis): a
   dict, no I/O. Served only while the :class:`~keel.cache.Invalidations`
   channel is ``usable``, i.e. this worker is sure to have heard of every
   change published up to a bound (see :mod:`keel.cache.redis_channel`);
2. the shared store (Redis, or the file every worker of a machine opens):
   entries are *fills of the record*, never deny-list entries whose absence
   would mean "allowed". A lost entry costs a reload, never a revocation;
3. the record itself, read whenever a tier above has no entry, cannot be
   trusted (the channel is down or lagging) or does not answer.

Keys share the subject as a hash tag (``{<subject>}``), so one request's
reads are one ``MGET`` on Redis Cluster too, and carry the channel's epoch.
A subject's record is written with ``set_if_newer`` at its row version, so
the newest version wins whatever order writers and fillers arrive in. A
session's entry is "live" at version 0 and "revoked" at version 1: a revoked
session can never be filled back to live.

After a change commits, its writer calls :meth:`subject_changed` or
:meth:`sessions_ended`: the new entries are written through and the subject
published on the channel, so this worker refuses at once and every other one
as soon as it hears the message. A worker whose channel is not usable moves
the epoch on before writing (it may not know the current one). If the
write-through fails, the channel moves the epoch on once the store answers
again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from keel._logging import event
from keel.auth.subjects import (
    DEFAULT_STATE_TTL,
    UNKNOWN_STATE_TTL,
    RecordLoader,
    SubjectRecord,
    UnreadableRecord,
    decode_record,
    encode_record,
)
from keel.cache import Invalidations, Store
from keel.cache.store import versioned
from keel.errors import CacheUnavailable
from keel.security.tokens import MAX_ACCESS_TTL, MAX_LEEWAY

__all__ = ["SESSION_REVOCATION_TTL", "SecurityState", "SessionLoader"]

#: Loads whether session ``sid`` of ``subject`` is live (exists, is the subject's, not revoked).
SessionLoader: TypeAlias = Callable[[str, str], Awaitable[bool]]

#: How long a revoked session's entry must last: the longest an access token of it can verify.
SESSION_REVOCATION_TTL: Final = float(MAX_ACCESS_TTL + MAX_LEEWAY)

_LIVE: Final = versioned(0, b"1")
_REVOKED: Final = versioned(1, b"0")
_SESSIONS_PER_SUBJECT: Final = 64

_log = logging.getLogger("keel.auth")


@dataclass(slots=True)
class _Near:
    """What this worker knows of one subject: its record and the sessions it has seen."""

    record: SubjectRecord
    sessions: dict[str, bool] = field(default_factory=dict)


def _tag(subject: str) -> str:
    # Braces are the hash tag; a subject id is a UUID, but never let one close the tag early.
    return "{" + subject.replace("{", "(").replace("}", ")") + "}"


class SecurityState:
    """The subject records and session states a bearer check needs, from the nearest safe tier."""

    def __init__(
        self,
        store: Store,
        channel: Invalidations,
        *,
        load_subject: RecordLoader,
        load_session: SessionLoader,
        state_ttl: float = DEFAULT_STATE_TTL,
        near_entries: int = 10_000,
    ) -> None:
        if near_entries < 1:
            raise ValueError("near_entries must be at least 1")
        self._store = store
        self._channel = channel
        self._load_subject = load_subject
        self._load_session = load_session
        self._state_ttl = state_ttl
        self._near_entries = near_entries
        self._near: OrderedDict[str, _Near] = OrderedDict()
        self._loading: dict[str, asyncio.Future[SubjectRecord]] = {}
        channel.on_invalidate(self._forget)

    def __repr__(self) -> str:
        return f"SecurityState(store={self._store!r}, channel={self._channel!r})"

    @property
    def channel(self) -> Invalidations:
        return self._channel

    # -- reading -----------------------------------------------------------------------------

    async def check(self, subject: str, session_id: str) -> tuple[SubjectRecord, bool]:
        """``subject``'s record and whether its session ``session_id`` is live."""
        channel = self._channel
        if channel.usable:
            near = self._near.get(subject)
            if near is not None:
                live = near.sessions.get(session_id)
                if live is not None:
                    return near.record, live
            try:
                return await self._shared(subject, session_id)
            except CacheUnavailable:
                pass  # the record answers instead, below
        return await self._record_of(subject), await self._load_session(subject, session_id)

    async def record(self, subject: str) -> SubjectRecord:
        """``subject``'s record from the nearest safe tier."""
        channel = self._channel
        if channel.usable:
            near = self._near.get(subject)
            if near is not None:
                return near.record
            try:
                epoch = channel.epoch
                (raw,) = await self._store.get_many([self._subject_key(epoch, subject)])
                return await self._subject_from(epoch, subject, raw)
            except CacheUnavailable:
                pass
        return await self._record_of(subject)

    async def _shared(self, subject: str, session_id: str) -> tuple[SubjectRecord, bool]:
        channel = self._channel
        stamp, epoch = channel.stamp, channel.epoch
        keys = [self._subject_key(epoch, subject), self._session_key(epoch, subject, session_id)]
        raw_subject, raw_session = await self._store.get_many(keys)
        record = await self._subject_from(epoch, subject, raw_subject)
        if raw_session == _LIVE:
            live = True
        elif raw_session == _REVOKED:
            live = False
        else:
            live = await self._load_session(subject, session_id)
            await self._store.set_if_newer(
                keys[1],
                _LIVE if live else _REVOKED,
                ttl=self._state_ttl if live else SESSION_REVOCATION_TTL,
            )
        # Keep it near only if no change was heard while reading: a change that crossed
        # this read may not be in what was read.
        if channel.near and channel.stamp == stamp and channel.usable:
            self._remember(subject, record, session_id, live)
        return record, live

    async def _subject_from(self, epoch: int, subject: str, raw: bytes | None) -> SubjectRecord:
        if raw is not None:
            try:
                return decode_record(raw)
            except UnreadableRecord:
                event(_log, logging.WARNING, "subject_record_unreadable", subject=subject)
                await self._store.delete(self._subject_key(epoch, subject))
        record = await self._record_of(subject)
        await self._store.set_if_newer(
            self._subject_key(epoch, subject), encode_record(record), ttl=self._ttl_of(record)
        )
        return record

    async def _record_of(self, subject: str) -> SubjectRecord:
        """Load from the record; concurrent loads of one subject share one query."""
        loading = self._loading.get(subject)
        if loading is not None:
            try:
                return await asyncio.shield(loading)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
            # The load this one waited for was cancelled with its caller: load it here.
            return await self._load_subject(subject)
        future: asyncio.Future[SubjectRecord] = asyncio.get_running_loop().create_future()
        self._loading[subject] = future
        try:
            record = await self._load_subject(subject)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: each waiter re-raises it itself
            raise
        else:
            future.set_result(record)
            return record
        finally:
            del self._loading[subject]

    # -- writing (after the change committed) ------------------------------------------------

    async def subject_changed(self, subject: str) -> None:
        """``subject``'s row changed: write its new record through and tell every worker."""
        record = await self._load_subject(subject)

        async def write() -> None:
            key = self._subject_key(self._channel.epoch, subject)
            await self._store.set_if_newer(key, encode_record(record), ttl=self._ttl_of(record))

        await self._write_through(subject, write)

    async def sessions_ended(self, subject: str, session_ids: Sequence[str]) -> None:
        """Sessions of ``subject`` were revoked: mark them so and tell every worker."""
        if not session_ids:
            return

        async def write() -> None:
            epoch = self._channel.epoch
            for sid in session_ids:
                key = self._session_key(epoch, subject, sid)
                await self._store.set_if_newer(key, _REVOKED, ttl=SESSION_REVOCATION_TTL)

        await self._write_through(subject, write)

    async def _write_through(self, subject: str, write: Callable[[], Awaitable[None]]) -> None:
        self._forget(subject)
        try:
            if not self._channel.usable:
                # This worker may be on an old epoch (its subscription is not up yet, or it
                # lags): what it writes could land where nobody reads while the others keep
                # the old entries. Move the epoch on first, so nobody reads those again.
                await self._channel.advance_epoch()
            await write()
            await self._channel.publish(subject)
        except CacheUnavailable as exc:
            # The record has the change; the next reader everywhere will reload it once the
            # channel has moved the epoch on. Until then other workers read the record too.
            self._channel.write_failed()
            event(
                _log,
                logging.WARNING,
                "security_write_through_failed",
                subject=subject,
                error=type(exc.__cause__ or exc).__name__,
            )

    # -- the near cache ------------------------------------------------------------------------

    def _remember(self, subject: str, record: SubjectRecord, session_id: str, live: bool) -> None:
        near = self._near.get(subject)
        if near is None or near.record.version != record.version:
            near = _Near(record)
            self._near[subject] = near
            if len(self._near) > self._near_entries:
                self._near.popitem(last=False)  # a near entry is a copy: dropping it is safe
        else:
            self._near.move_to_end(subject)
        if len(near.sessions) >= _SESSIONS_PER_SUBJECT:
            near.sessions.clear()
        near.sessions[session_id] = live

    def _forget(self, subject: str | None) -> None:
        if subject is None:
            self._near.clear()
        else:
            self._near.pop(subject, None)

    # -- keys ------------------------------------------------------------------------------------

    @staticmethod
    def _subject_key(epoch: int, subject: str) -> str:
        return f"sec:e{epoch}:{_tag(subject)}:s"

    @staticmethod
    def _session_key(epoch: int, subject: str, session_id: str) -> str:
        return f"sec:e{epoch}:{_tag(subject)}:sid:{session_id}"

    def _ttl_of(self, record: SubjectRecord) -> float:
        return self._state_ttl if record.known else min(self._state_ttl, UNKNOWN_STATE_TTL)
