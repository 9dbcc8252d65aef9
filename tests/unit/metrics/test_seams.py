"""What the seams record: warm-ups, background tasks, the cache fallback, the mail outbox."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from keel import metrics
from keel._clock import FrozenClock
from keel.cache import FallbackStore, MemoryStore, RedisStore
from keel.metrics import Instruments
from keel.runtime.lifecycle import Supervisor, Warmup
from keel.settings import LifecycleSettings

CLOSED_REDIS = "redis://127.0.0.1:1/0"


class Recorded:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.instruments = Instruments(self.registry)

    def value(self, metric: str, /, **labels: str) -> float:
        found = self.registry.get_sample_value(metric, labels)
        return 0.0 if found is None else found


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    found = Recorded()
    monkeypatch.setattr(metrics, "_active", found.instruments)
    return found


async def test_warmup_outcomes_and_durations_and_task_failures(recorded: Recorded) -> None:
    settings = LifecycleSettings(
        warmup_timeout=0.1, warmup_budget=5, shutdown_timeout=1, readiness_timeout=1
    )
    supervisor = Supervisor(settings)

    async def fine() -> None:
        return None

    async def stuck() -> None:
        await asyncio.sleep(10)

    async def broken() -> None:
        raise RuntimeError("warm-up failed")

    async def failing_service() -> None:
        raise ValueError("service failed")

    for name, run in (("fine", fine), ("stuck", stuck), ("broken", broken)):
        supervisor.add_warmup(Warmup(name, run))
    supervisor.add_service("test_service", failing_service)
    await supervisor.start()
    await supervisor.wait_warmups()
    await asyncio.sleep(0)
    await supervisor.stop()
    for name, outcome in (("fine", "ok"), ("stuck", "timeout"), ("broken", "error")):
        assert recorded.value("keel_warmup_total", name=name, outcome=outcome) == 1
        assert recorded.value("keel_warmup_duration_seconds_count", name=name) == 1
    assert recorded.value("keel_warmup_duration_seconds_sum", name="stuck") >= 0.1
    assert recorded.value("keel_background_task_failures_total", task="test_service") == 1


async def test_the_cache_fallback_reports_degraded_once_per_outage(recorded: Recorded) -> None:
    clock = FrozenClock()
    primary = RedisStore(CLOSED_REDIS, namespace="t:", timeout=0.25)
    store = FallbackStore(
        primary, MemoryStore(clock), clock, 1.0, degrade_after=0, degrade_failures=1
    )
    try:
        await store.set("a", b"1")
        await store.set("b", b"2")
    finally:
        await store.close()
    assert store.status == "degraded"
    assert recorded.value("keel_cache_degraded") == 1
    assert recorded.value("keel_cache_fallbacks_total") == 1


def test_the_durable_outboxs_observer_records_depth_and_give_ups(recorded: Recorded) -> None:
    """``create_app`` hands the outbox a ``MailOutboxMetrics`` (tests/accounts/test_outbox.py
    proves the outbox calls its observer on every count and give-up)."""
    observer = metrics.MailOutboxMetrics()
    observer.gave_up("verify_email")
    assert recorded.value("keel_mail_failures_total") == 1
    observer.depth(4)
    assert recorded.value("keel_mail_outbox_depth") == 4
    observer.depth(0)
    assert recorded.value("keel_mail_outbox_depth") == 0


def test_nothing_is_recorded_while_collection_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_active", None)
    metrics.record_login("success")
    metrics.record_lockout()
    metrics.set_mail_outbox_depth(3)
    metrics.sample_process((1, 0))
    with metrics.hash_slot_wait():
        pass
    assert metrics.active() is None
