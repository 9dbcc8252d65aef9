"""Prometheus metrics: what keel counts, and the one switch that turns counting on.

One set of instruments per process (``prometheus_client`` keeps one value
store per process, in memory or, under gunicorn, one file per worker in the
multiprocess directory). ``enable()`` builds it on first use, ``disable()``
turns recording off; every ``record_*`` function below is a no-op while
recording is off, so the seams that call them cost one global read then.
Labels hold route templates, outcomes and names chosen by keel, never a raw
path or a user id.
"""

from __future__ import annotations

import os
from time import monotonic
from typing import Any

from keel.metrics._instruments import Instruments

__all__ = [
    "Instruments",
    "MailOutboxMetrics",
    "active",
    "disable",
    "enable",
    "hash_slot_wait",
    "record_audit_append",
    "record_cache_fallback",
    "record_db_pool_timeout",
    "record_lockout",
    "record_login",
    "record_mail_failure",
    "record_rate_limit_refusal",
    "record_task_failure",
    "record_warmup",
    "record_worker_boot",
    "record_worker_exit",
    "registry",
    "sample_process",
    "set_cache_degraded",
    "set_mail_outbox_depth",
]

_built: tuple[Any, Instruments] | None = None
_active: Instruments | None = None
_exits: Any = None


def _build() -> tuple[Any, Instruments]:
    global _built
    if _built is None:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=True)
        _built = (registry, Instruments(registry))
    return _built


def enable() -> Instruments:
    """Build this process's instruments (once) and record from now on."""
    global _active
    _active = _build()[1]
    return _active


def disable() -> None:
    """Stop recording in this process (``KEEL_METRICS=false``)."""
    global _active
    _active = None


def active() -> Instruments | None:
    """The instruments while recording is on, else ``None``."""
    return _active


def registry() -> Any:
    """The registry this process's instruments live in (built if needed)."""
    return _build()[0]


# -- seams ----------------------------------------------------------------------------------
# Each is called where the fact happens; the checks stay out of the callers.


def record_worker_boot() -> None:
    if _active is not None:
        _active.worker_boots.inc()


def record_worker_exit(cause: str) -> None:
    """In the gunicorn master, which builds no other instrument (a live gauge made there
    would show the master as a worker): count an ended worker by ``cause``."""
    global _exits
    if _exits is None:
        from prometheus_client import Counter

        _exits = Counter("keel_worker_exits", "Worker processes ended", ("cause",), registry=None)
    _exits.labels(cause).inc()


def record_warmup(name: str, outcome: str, seconds: float) -> None:
    if _active is not None:
        _active.warmups.labels(name, outcome).inc()
        _active.warmup_duration.labels(name).observe(seconds)


def record_task_failure(task: str) -> None:
    if _active is not None:
        _active.task_failures.labels(task).inc()


def set_cache_degraded(degraded: bool) -> None:
    if _active is not None:
        _active.cache_degraded.set(1 if degraded else 0)


def record_cache_fallback() -> None:
    if _active is not None:
        _active.cache_fallbacks.inc()


def record_db_pool_timeout() -> None:
    if _active is not None:
        _active.db_pool_timeouts.inc()


def record_login(outcome: str) -> None:
    if _active is not None:
        _active.logins.labels(outcome).inc()


def record_lockout() -> None:
    if _active is not None:
        _active.lockouts.inc()


def record_rate_limit_refusal(family: str) -> None:
    if _active is not None:
        _active.rate_limit_refusals.labels(family).inc()


def record_audit_append(events: int, lock_wait: float) -> None:
    """``events`` appended after waiting ``lock_wait`` seconds for the chain's head."""
    if _active is not None:
        _active.audit_appends.inc(events)
        _active.audit_lock_wait.observe(lock_wait)


def record_mail_failure() -> None:
    if _active is not None:
        _active.mail_failures.inc()


def set_mail_outbox_depth(depth: int) -> None:
    """For the mail outbox: how many messages wait to be sent (the latest value wins)."""
    if _active is not None:
        _active.mail_outbox_depth.set(depth)


class MailOutboxMetrics:
    """The durable mail outbox's observer (``keel.accounts.OutboxObserver``): depth and give-ups."""

    __slots__ = ()

    def depth(self, pending: int) -> None:
        set_mail_outbox_depth(pending)

    def gave_up(self, kind: str) -> None:
        record_mail_failure()


class _HashSlotWait:
    """Counts a hash in the queue until it gets its slot, then observes the wait."""

    __slots__ = ("_started",)

    def __enter__(self) -> None:
        self._started = monotonic()
        if _active is not None:
            _active.hash_queue_depth.inc()

    def __exit__(self, *_: object) -> None:
        if _active is not None:
            _active.hash_queue_depth.dec()
            _active.hash_wait.observe(monotonic() - self._started)


def hash_slot_wait() -> _HashSlotWait:
    """``with hash_slot_wait(): await slot.acquire()``: queue depth and wait time."""
    return _HashSlotWait()


def sample_process(pool: tuple[int, int] | None = None) -> None:
    """Publish this worker's request counts, requests in flight and resident memory, and the
    pool gauges from ``(in_use, overflow)``: every second (``keel.api.metrics``), at each
    scrape and at shutdown."""
    if _active is None:
        return
    _active.publish()
    rss = _resident_bytes()
    if rss is not None:
        _active.resident_memory.set(rss)
    if pool is not None:
        _active.db_pool_in_use.set(pool[0])
        _active.db_pool_overflow.set(pool[1])


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
