"""Which worker answered: the access lines of a running keel, and spreading requests over workers.

Idle gunicorn workers do not share accepts evenly (one of them often wins every
``accept()`` of a slow series of requests), so a test about "every worker" sends
from many concurrent clients on fresh connections and checks, in the access
log, that each worker's pid served some of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from tests.runtime._harness import RunningServer

__all__ = ["CLIENTS", "events", "served_by", "spread", "worker_pids"]

CLIENTS = 16


def events(server: RunningServer) -> list[dict[str, object]]:
    """Every JSON log line the server wrote so far."""
    return [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]


def served_by(server: RunningServer, prefix: str) -> dict[str, int]:
    """Request id → pid of the worker that logged its access line (ids starting ``prefix``)."""
    return {
        str(e["request_id"]): int(str(e["pid"]))
        for e in events(server)
        if e.get("event") == "http_request" and str(e.get("request_id", "")).startswith(prefix)
    }


def worker_pids(server: RunningServer) -> set[int]:
    """The pids of the workers that reported ready."""
    return {int(str(e["pid"])) for e in events(server) if e.get("event") == "worker_ready"}


def spread(
    server: RunningServer,
    send: Callable[[str], int],
    label: str,
    *,
    workers: int,
    per_round: int = 64,
    rounds: int = 8,
) -> list[int]:
    """Call ``send(request_id)`` from ``CLIENTS`` threads until every worker served some.

    Returns every status, in the order sent. Fails if after ``rounds`` rounds
    the access log does not show all ``workers`` pids.
    """
    statuses: list[int] = []
    served: set[int] = set()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for round_ in range(rounds):
            ids = [f"{label}-{round_}-{n:04d}" for n in range(per_round)]
            statuses.extend(pool.map(send, ids))
            pids = worker_pids(server)
            served = set(served_by(server, f"{label}-").values())
            if len(pids) == workers and served == pids:
                return statuses
    raise AssertionError(f"not every worker served a request: {served} of {worker_pids(server)}")
