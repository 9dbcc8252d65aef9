"""``RequestTally``: what it writes at a flush is what one observation per request writes."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from keel.metrics._instruments import HTTP_BUCKETS
from keel.metrics._tally import RequestTally, supports_bulk


def _pair(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    requests = Counter("r", "r", ("route", "method", "status"), registry=registry)
    duration = Histogram("d", "d", ("route", "method"), registry=registry, buckets=HTTP_BUCKETS)
    return requests, duration


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): round(s.value, 9)
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_flush_writes_what_observing_each_request_would() -> None:
    tallied, observed = CollectorRegistry(), CollectorRegistry()
    tally = RequestTally(*_pair(tallied), HTTP_BUCKETS)
    requests, duration = _pair(observed)
    chance = random.Random(7)
    bounds = [*HTTP_BUCKETS, 100.0]
    for n in range(2000):
        route = chance.choice(["/users/me", "/livez", "unmatched"])
        status = chance.choice([200, 401, 404])
        # Exact bucket bounds included: a value equal to a bound belongs to that bucket (le).
        seconds = chance.choice(bounds) if n % 5 == 0 else chance.uniform(0, 40)
        tally.add(route, "GET", status, seconds)
        requests.labels(route, "GET", str(status)).inc()
        duration.labels(route, "GET").observe(seconds)
        if n % 700 == 0:
            tally.flush()
    tally.flush()
    assert _samples(tallied) == _samples(observed)


def test_nothing_is_written_before_a_flush_and_a_flush_writes_once() -> None:
    registry = CollectorRegistry()
    tally = RequestTally(*_pair(registry), HTTP_BUCKETS)
    tally.add("/livez", "GET", 200, 0.001)
    assert (
        registry.get_sample_value("r_total", {"route": "/livez", "method": "GET", "status": "200"})
        is None
    )
    tally.flush()
    tally.flush()
    labels = {"route": "/livez", "method": "GET", "status": "200"}
    assert registry.get_sample_value("r_total", labels) == 1
    assert registry.get_sample_value("d_count", {"route": "/livez", "method": "GET"}) == 1


def test_the_installed_prometheus_client_takes_bulk_writes() -> None:
    _, duration = _pair(CollectorRegistry())
    assert supports_bulk(duration.labels("/livez", "GET"))


def test_without_bulk_writes_each_duration_is_observed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("keel.metrics._tally.supports_bulk", lambda child: False)
    registry = CollectorRegistry()
    tally = RequestTally(*_pair(registry), HTTP_BUCKETS)
    tally.add("/livez", "GET", 200, 0.2)
    assert registry.get_sample_value("d_sum", {"route": "/livez", "method": "GET"}) == 0.2
    tally.flush()
    assert registry.get_sample_value("d_count", {"route": "/livez", "method": "GET"}) == 1
