"""The Prometheus instruments keel records, built once per process on first use.

Built lazily, never at import: ``prometheus_client`` picks its value store
(in memory, or one file per process under ``PROMETHEUS_MULTIPROC_DIR``) when it
is first imported, and the gunicorn master names that directory only when it
starts. Gauges say how the workers' values combine (``multiprocess_mode``); the
``live*`` modes drop a worker's value once the master marks it dead.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from keel.metrics._tally import RequestTally

__all__ = ["HTTP_BUCKETS", "Instruments"]

# How each worker's value of a gauge combines; ``live*`` forgets dead workers.
GaugeMode = Literal["livesum", "livemax", "liveall", "livemostrecent"]

HTTP_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Waits for a hashing slot or the audit chain's lock: short when healthy.
WAIT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
WARMUP_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Instruments:
    """Every keel metric, registered in ``registry`` (a ``CollectorRegistry``)."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, mode: GaugeMode) -> Any:
            return Gauge(name, doc, registry=registry, multiprocess_mode=mode)

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
        ) -> Any:
            return Histogram(name, doc, labels, registry=registry, buckets=buckets)

        self.http_requests = counter(
            "keel_http_requests", "HTTP requests by route template", ("route", "method", "status")
        )
        self.http_duration = histogram(
            "keel_http_request_duration_seconds",
            "HTTP request duration by route template",
            HTTP_BUCKETS,
            ("route", "method"),
        )
        self.http_in_flight = gauge(
            "keel_http_requests_in_flight", "HTTP requests being served", "livesum"
        )
        #: Kept by the request middleware in memory, written by ``publish``: under gunicorn
        #: every metric write is a locked write to the worker's value file.
        self.requests_in_flight = 0
        self.requests = RequestTally(self.http_requests, self.http_duration, HTTP_BUCKETS)
        self.worker_boots = counter("keel_worker_boots", "Worker processes booted")
        self.warmups = counter("keel_warmup", "Warm-up outcomes", ("name", "outcome"))
        self.warmup_duration = histogram(
            "keel_warmup_duration_seconds", "Warm-up durations", WARMUP_BUCKETS, ("name",)
        )
        self.task_failures = counter(
            "keel_background_task_failures", "Background tasks ended by an error", ("task",)
        )
        self.cache_degraded = gauge(
            "keel_cache_degraded", "1 while a worker serves from the cache fallback", "livemax"
        )
        self.cache_fallbacks = counter(
            "keel_cache_fallbacks", "Switches from the shared store to the fallback"
        )
        self.db_pool_in_use = gauge(
            "keel_db_pool_in_use", "Database connections checked out", "livesum"
        )
        self.db_pool_overflow = gauge(
            "keel_db_pool_overflow", "Database connections open beyond the pool size", "livesum"
        )
        self.db_pool_timeouts = counter(
            "keel_db_pool_timeouts", "Waits for a database connection that timed out"
        )
        self.hash_queue_depth = gauge(
            "keel_hash_queue_depth", "Password hashes waiting for a slot", "livesum"
        )
        self.hash_wait = histogram(
            "keel_hash_wait_seconds", "Time a password hash waited for a slot", WAIT_BUCKETS
        )
        self.logins = counter("keel_logins", "Login attempts by outcome", ("outcome",))
        self.lockouts = counter("keel_lockouts", "Accounts locked after repeated failures")
        self.rate_limit_refusals = counter(
            "keel_rate_limit_refusals", "Requests refused by a rate limit", ("family",)
        )
        self.audit_appends = counter("keel_audit_appends", "Audit events appended to the chain")
        self.audit_lock_wait = histogram(
            "keel_audit_chain_lock_wait_seconds",
            "Time an append waited for the chain",
            WAIT_BUCKETS,
        )
        self.mail_outbox_depth = gauge(
            "keel_mail_outbox_depth", "Messages waiting in the mail outbox", "livemostrecent"
        )
        self.mail_failures = counter("keel_mail_failures", "Messages that could not be sent")
        self.resident_memory = gauge(
            "keel_process_resident_memory_bytes", "Resident memory of each live worker", "liveall"
        )

    def publish(self) -> None:
        """Write the requests counted in memory since the last call, and those in flight."""
        self.requests.flush()
        self.http_in_flight.set(self.requests_in_flight)
