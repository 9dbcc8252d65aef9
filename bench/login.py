"""Login throughput vs keel's hashing bound, and what a login storm does to ``/livez`` and memory.

keel's own app (``keel serve``, default factory, 2 workers, real argon2id
parameters from the settings' defaults) with an account made by ``keel users
create-admin``. Measured in one run:

- the hashing bound, in this process with keel's ``PasswordHasher`` and the
  same parameters: ``cores / single verification time`` (the median of
  sequential verifications), and beside it the hasher's own throughput with
  ``hash_concurrency`` threads (what one worker can do at most);
- ``POST /auth/login`` with the right password (every login a real argon2
  verification, a token, a session, an audit row) from one load generator at
  ``--login-connections``; its rate over the bound is the figure (target
  >= 90 %);
- during that storm, ``GET /livez`` from a paced probe (20 requests a second,
  one at a time, each on a fresh connection, as a load balancer's health
  check would: it adds no load that would take CPU from the logins): its p99
  (target <= 20 ms: hashing never runs on the event loop), and the same probe
  before the storm;
- the workers' peak memory during the storm: the largest VmRSS sampled every
  50 ms and the kernel's VmHWM at the end (target <= 120 MB).

The brute-force limits are off for the run (``KEEL_THROTTLE_ENABLED=false``):
one client logging in from one address is what they exist to stop.

    python bench/login.py [--duration 10] [--workers 2] [--login-connections 16]
                          [--database-url URL] [--redis-url URL] [--hash-concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from bench.users_me import DEFAULT_REDIS, Setup, log_in
from keel.security.hashing import PasswordHasher
from keel.settings import Settings

__all__ = ["LoginResult", "main", "run"]

PROBE_RATE = 20.0
WARMUP_SECONDS = 2.0


@dataclass
class HashBound:
    single_ms: float  # one verification, nothing else running
    cores: int
    pool_per_second: float  # hash_concurrency threads kept busy, one worker's hasher
    concurrency: int

    @property
    def bound(self) -> float:
        return self.cores / (self.single_ms / 1000)


@dataclass
class LoginResult:
    duration: float
    workers: int
    connections: int
    bound: HashBound | None = None
    login: h.WrkResult | None = None
    livez: h.PacedProbe | None = None
    livez_idle: h.PacedProbe | None = None
    peak_rss_kib: int = 0
    hwm_kib: int = 0
    notes: list[str] = field(default_factory=list)
    servers: list[h.Server] = field(default_factory=list)
    loadavg: list[str] = field(default_factory=list)


def measure_bound(settings: Settings, password: str, seconds: float = 3.0) -> HashBound:
    """The hashing bound with keel's ``PasswordHasher`` at the server's parameters."""
    hasher = PasswordHasher(settings.passwords)

    async def measure() -> tuple[float, float]:
        stored = await hasher.hash(password)
        await hasher.verify(stored, password)
        singles = []
        for _ in range(9):
            began = time.perf_counter()
            await hasher.verify(stored, password)
            singles.append(time.perf_counter() - began)
        done = 0
        began = time.perf_counter()
        deadline = began + seconds

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await hasher.verify(stored, password)
                done += 1

        await asyncio.gather(*(loop() for _ in range(settings.passwords.hash_concurrency)))
        return statistics.median(singles), done / (time.perf_counter() - began)

    try:
        single, pool = asyncio.run(measure())
    finally:
        hasher.close()
    return HashBound(single * 1000, os.cpu_count() or 1, pool, settings.passwords.hash_concurrency)


def run(
    *,
    duration: float = 10.0,
    workers: int = 2,
    connections: int = 16,
    database_url: str | None = None,
    redis_url: str = DEFAULT_REDIS,
    hash_concurrency: int | None = None,
    directory: Path,
) -> LoginResult:
    from keel.security.keys import generate_key_file

    key_file = directory / "login-keys.json"
    if not key_file.exists():
        generate_key_file(key_file, "EdDSA")
    setup = Setup(directory, key_file, redis_url)
    result = LoginResult(duration, workers, connections)
    env = setup.env()
    if hash_concurrency is not None:
        env = (*env, ("KEEL_HASH_CONCURRENCY", str(hash_concurrency)))
    spec = h.ServerSpec("keel", None, workers, "WARNING", database_url, database_url is None, env)
    body = json.dumps({"email": setup.email, "password": setup.password})
    json_header = ("Content-Type: application/json",)
    with h.servers(spec) as running:
        result.servers.extend(running)
        [keel] = running
        keel.wait_ready("/livez")
        if database_url is not None:
            h.upgrade_database(keel)
        h.create_admin(keel, setup.email, setup.password)
        log_in(keel.port, setup.email, setup.password)  # the account works, the hasher is warm
        measured = (
            Settings() if hash_concurrency is None else Settings(hash_concurrency=hash_concurrency)
        )
        result.bound = measure_bound(measured, setup.password)
        with h.PacedProbe(keel.port, "/livez", rate=PROBE_RATE) as idle:
            time.sleep(WARMUP_SECONDS * 2)
        result.livez_idle = idle
        h.run_wrk(
            keel.url + "/auth/login",
            duration=WARMUP_SECONDS,
            connections=connections,
            headers=json_header,
            method="POST",
            body=body,
        )
        result.loadavg.append(f"start {h.loadavg()}")
        with h.PeakMemory(keel) as memory:
            storm = h.start_load(
                keel.url + "/auth/login",
                duration=duration,
                connections=connections,
                headers=json_header,
                method="POST",
                body=body,
            )
            time.sleep(0.5)  # measure /livez inside the storm, not while it ramps up
            with h.PacedProbe(keel.port, "/livez", rate=PROBE_RATE) as probe:
                time.sleep(duration - 1.0)
            result.livez = probe
            result.login = storm.result()
        result.loadavg.append(f"end {h.loadavg()}")
        result.peak_rss_kib, result.hwm_kib = memory.peak_rss_kib, memory.hwm_kib
    run_ = result.login
    if run_ is not None and (run_.socket_errors or run_.non_2xx):
        result.notes.append(
            f"login: {run_.socket_errors} socket errors, {run_.non_2xx} non-2xx "
            f"in {run_.requests} requests"
        )
    for label, probe_ in (("before", result.livez_idle), ("during", result.livez)):
        if probe_ is not None and probe_.failures:
            result.notes.append(f"/livez probe {label} the storm: {probe_.failures} failed")
    return result


def report(result: LoginResult) -> None:
    bound, login, livez = result.bound, result.login, result.livez
    if bound is None or login is None or livez is None:
        print("login bench: no figures")
        return
    share = login.rps / bound.bound
    print(
        f"== POST /auth/login storm: {h.load_tool()} -c{result.connections} "
        f"-d{result.duration:.0f}s on keel {result.workers}w (argon2id at the default "
        f"parameters), /livez from a paced probe at {PROBE_RATE:.0f}/s =="
    )
    rows = [
        [
            "hash bound (cores / one verification)",
            f"{bound.bound:.1f}/s",
            f"{bound.cores} cores / {bound.single_ms:.1f} ms",
        ],
        [
            f"one hasher, {bound.concurrency} threads busy",
            f"{bound.pool_per_second:.1f}/s",
            "in-process, PasswordHasher",
        ],
        [
            "login throughput",
            f"{login.rps:.1f}/s",
            f"p50 {login.p50_ms:.0f} ms, p99 {login.p99_ms:.0f} ms, {login.requests} logins",
        ],
    ]
    for label, probe in (("before", result.livez_idle), ("during", livez)):
        if probe is not None:
            rows.append(
                [
                    f"/livez {label} the storm (paced probe)",
                    f"{len(probe.latencies_ms)} answered",
                    f"p50 {probe.percentile(0.5):.2f} ms, p99 {probe.percentile(0.99):.2f} ms, "
                    f"max {probe.percentile(1.0):.2f} ms",
                ]
            )
    rows.append(
        [
            "worker peak memory",
            h.mib(result.peak_rss_kib),
            f"sampled VmRSS max; VmHWM {h.mib(result.hwm_kib)}",
        ]
    )
    print(h.table(["", "figure", "detail"], rows))
    verdict = "met" if share >= 0.90 else "missed"
    print(f"login throughput = {share * 100:.0f} % of the hash bound (target >= 90 %: {verdict})")
    p99 = livez.percentile(0.99)
    verdict = "met" if p99 <= 20 else "missed"
    print(f"/livez p99 during the storm {p99:.1f} ms (target <= 20 ms: {verdict})")
    peak = max(result.peak_rss_kib, result.hwm_kib) / 1024
    verdict = "met" if peak <= 120 else "missed"
    print(f"worker peak memory {peak:.1f} MiB (target <= 120 MB: {verdict})")
    print("load average: " + "; ".join(result.loadavg))
    for note in result.notes:
        print(f"note: {note}")
    h.print_findings(result.servers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--login-connections", type=int, default=16)
    parser.add_argument("--database-url", default=None, help="default: a migrated SQLite file")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument(
        "--hash-concurrency", type=int, default=None, help="KEEL_HASH_CONCURRENCY for the server"
    )
    args = parser.parse_args(argv)
    h.require_wrk()
    with tempfile.TemporaryDirectory(prefix="keel-bench-login-") as tmp:
        try:
            result = run(
                duration=args.duration,
                workers=args.workers,
                connections=args.login_connections,
                database_url=args.database_url,
                redis_url=args.redis_url,
                hash_concurrency=args.hash_concurrency,
                directory=Path(tmp),
            )
        except h.BenchError as exc:
            print(f"bench login: {exc}", file=sys.stderr)
            return 1
    report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
