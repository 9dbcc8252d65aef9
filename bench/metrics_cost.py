"""What Prometheus metrics cost: authenticated ``GET /users/me`` with metrics on vs off.

Two keel servers started the same way (``keel serve``, default factory, logs
at WARNING, each on its own migrated SQLite file, Redis as the cache store
under a namespace of this run's own), one with metrics collected and served
(``KEEL_METRICS_TOKEN`` set: the request middleware, the multiprocess value
files, the per-worker sampler), one with ``KEEL_METRICS=false``. Runs
alternate on/off, off/on, ... so that drift on a shared machine hits both; the
figure is the ratio of the medians. Beside it, the CPU time the workers spent
per request (``/proc/<pid>/stat``, user + system) in the same runs: on a
machine other work shares, throughput moves with the neighbours, CPU per
request much less. A preflight proves the switch: ``/metrics`` answers 200 on
one and 404 on the other. After the load, the ``/users/me``
count scraped from the metrics server is printed beside the number of
requests the load generator completed against it.

    python bench/metrics_cost.py [--duration 10] [--connections 64] [--pairs 3]
                                 [--workers 2] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from bench.users_me import DEFAULT_REDIS, PATH, WARMUP_SECONDS, Setup, log_in
from keel.api.metrics import SAMPLE_INTERVAL
from keel.security.keys import generate_key_file

__all__ = ["main"]

TARGET = 0.95  # metrics on keeps at least 95 % of the throughput with them off


def _get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection(h.HOST, port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _counted(exposition: str, route: str) -> float:
    """``keel_http_requests_total`` summed over every sample for ``route``."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("keel_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="'' for the embedded default")
    args = parser.parse_args(argv)
    h.require_wrk()
    scrape_token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="keel-bench-metrics-") as tmp:
        directory = Path(tmp)
        key_file = directory / "keys.json"
        generate_key_file(key_file, "EdDSA")
        setup = Setup(directory, key_file, args.redis_url)
        run_id = secrets.token_hex(4)

        def spec(label: str, *extra: tuple[str, str]) -> h.ServerSpec:
            env = (*setup.env(), ("KEEL_CACHE_NAMESPACE", f"bench-{run_id}-{label}:"), *extra)
            return h.ServerSpec(label, None, args.workers, "WARNING", None, True, env)

        on_spec = spec("on", ("KEEL_METRICS_TOKEN", scrape_token))
        off_spec = spec("off", ("KEEL_METRICS", "false"), ("KEEL_METRICS_TOKEN", scrape_token))
        on = h.Series(f"{args.workers}w {PATH}, metrics on")
        off = h.Series(f"{args.workers}w {PATH}, metrics off")
        notes: list[str] = []
        cpu: dict[str, list[float]] = {"on": [], "off": []}  # µs of worker CPU per request
        try:
            with h.servers(on_spec, off_spec) as running:
                tokens: list[str] = []
                for server in running:
                    server.wait_ready("/livez")
                    h.create_admin(server, setup.email, setup.password)
                    tokens.append(log_in(server.port, setup.email, setup.password))
                metered, plain = running
                served = _get(metered.port, "/metrics", scrape_token)
                absent = _get(plain.port, "/metrics", scrape_token)[0]
                if served[0] != 200 or "keel_http_requests_total" not in served[1] or absent != 404:
                    raise h.BenchError(f"preflight: /metrics on {served[0]}, off {absent}")
                for server, token in zip(running, tokens, strict=True):
                    auth = (f"Authorization: Bearer {token}",)
                    h.run_wrk(server.url + PATH, headers=auth, duration=WARMUP_SECONDS)
                # Each worker writes its counts every second: let the warm-up's be written.
                time.sleep(SAMPLE_INTERVAL + 0.5)
                before = _counted(_get(metered.port, "/metrics", scrape_token)[1], PATH)
                load = [f"start {h.loadavg()}"]
                loaded = 0
                for pair in range(args.pairs):
                    order = [(metered, tokens[0], on), (plain, tokens[1], off)]
                    for server, token, series in order if pair % 2 == 0 else order[::-1]:
                        assert server.proc is not None
                        workers = h.children_of(server.proc.pid)
                        spent = _cpu_seconds(workers)
                        run = h.run_wrk(
                            server.url + PATH,
                            headers=(f"Authorization: Bearer {token}",),
                            duration=args.duration,
                            connections=args.connections,
                        )
                        spent = _cpu_seconds(workers) - spent
                        cpu[server.spec.label].append(spent / max(run.requests, 1) * 1e6)
                        series.add(run, notes)
                        if series is on:
                            loaded += run.requests
                load.append(f"end {h.loadavg()}")
                time.sleep(SAMPLE_INTERVAL + 0.5)
                after = _counted(_get(metered.port, "/metrics", scrape_token)[1], PATH)
                findings = list(running)
        except h.BenchError as exc:
            print(f"bench metrics_cost: {exc}", file=sys.stderr)
            return 1
    share = on.rps / off.rps if off.rps else 0.0
    print(
        f"== authenticated GET {PATH}, metrics on vs off ({h.load_tool()} "
        f"-c{args.connections} -d{args.duration:.0f}s, {args.pairs} alternating pairs, medians; "
        f"REDIS_URL={args.redis_url or 'unset'}) =="
    )
    print(h.table(h.SERIES_HEADERS, [on.row(off), off.row(off)]))
    verdict = "met" if share >= TARGET else f"missed by {(TARGET - share) * 100:.1f} points"
    print(
        f"metrics on / off: {share:.3f} ({(share - 1) * 100:+.1f} %; target within 5 %: {verdict})"
    )
    cpu_on, cpu_off = statistics.median(cpu["on"]), statistics.median(cpu["off"])
    print(
        f"worker CPU per request (median): on {cpu_on:.0f} µs, off {cpu_off:.0f} µs, "
        f"{cpu_on - cpu_off:+.1f} µs ({(cpu_on / cpu_off - 1) * 100:+.1f} %); runs on "
        + " / ".join(f"{v:.0f}" for v in cpu["on"])
        + ", off "
        + " / ".join(f"{v:.0f}" for v in cpu["off"])
    )
    print(
        f"{PATH} requests counted by the metrics server: {after - before:,.0f}; "
        f"completed by the load generator: {loaded:,} (a run's last requests, cut by its "
        "end, may be counted by the server but not by the client)"
    )
    print("load average: " + "; ".join(load))
    for note in notes:
        print(f"note: {note}")
    h.print_findings(findings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
