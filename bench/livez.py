"""``GET /livez`` throughput and latency, keel vs bare FastAPI, same server stack.

For 2 workers and then 1 worker, keel and the bare app are started side by
side (``keel serve``, logs at WARNING), warmed up, then measured with
``wrk --latency -t2 -c64 -d10s`` in alternating runs (keel, bare, keel, bare)
so that the machine's noise is spread over both. With 2 workers one extra keel
run is made at ``KEEL_LOG_LEVEL=INFO``, where keel writes a JSON access-log line
per request: that is the cost of production logging, reported separately.

    python bench/livez.py [--duration 10] [--connections 64] [--pairs 2] [--workers 2 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h

WARMUP_SECONDS = 2.0
IDLE_PAUSE = 1.0


@dataclass
class WorkerResult:
    workers: int
    keel: h.Series
    bare: h.Series
    info: h.Series | None = None
    info_log_lines: int | None = None
    notes: list[str] = field(default_factory=list)
    # label -> (idle after warm-up, after all the measured runs): read by bench/rss.py's report
    memory: dict[str, tuple[h.TreeMemory, h.TreeMemory]] = field(default_factory=dict)
    load_seconds: float = 0.0


@dataclass
class LivezResult:
    duration: float
    connections: int
    by_workers: list[WorkerResult] = field(default_factory=list)
    servers: list[h.Server] = field(default_factory=list)


def _measure(
    server: h.Server, series: h.Series, result: WorkerResult, duration: float, connections: int
) -> h.WrkResult:
    run = h.run_wrk(server.url + "/livez", duration=duration, connections=connections)
    return series.add(run, result.notes)


def run_for_workers(
    workers: int, *, duration: float, connections: int, pairs: int, info: bool, into: LivezResult
) -> WorkerResult:
    specs = [
        h.keel_spec("keel", workers=workers, migrate=True),
        h.bare_spec("bare", workers=workers),
    ]
    if info:
        specs.append(h.keel_spec("keel@INFO", workers=workers, log_level="INFO", migrate=True))
    result = WorkerResult(workers=workers, keel=h.Series("keel"), bare=h.Series("bare"))
    with h.servers(*specs) as running:
        into.servers.extend(running)
        for server in running:
            server.wait_ready("/livez")
        for server in running:
            h.warm(server.url + "/livez", requests=400)
        time.sleep(IDLE_PAUSE)
        idle = {server.spec.label: server.memory() for server in running}
        for server in running:
            h.run_wrk(server.url + "/livez", duration=WARMUP_SECONDS, connections=connections)
        keel, bare = running[0], running[1]
        for i in range(pairs):
            _measure(keel, result.keel, result, duration, connections)
            _measure(bare, result.bare, result, duration, connections)
            if info and i == 0:
                keel_info = running[2]
                result.info = h.Series("keel@INFO")
                offset = keel_info.log_size()
                run = _measure(keel_info, result.info, result, duration, connections)
                result.info_log_lines = keel_info.log_lines_since(offset)
                if result.info_log_lines < run.requests * 0.9:
                    result.notes.append(
                        f"keel@INFO wrote {result.info_log_lines} log lines for "
                        f"{run.requests} requests (expected one access line per request)"
                    )
        for server in running:
            result.memory[server.spec.label] = (idle[server.spec.label], server.memory())
        result.load_seconds = WARMUP_SECONDS + pairs * duration
    into.by_workers.append(result)
    return result


def run(
    *,
    duration: float = 10.0,
    connections: int = 64,
    pairs: int = 2,
    worker_counts: tuple[int, ...] = (2, 1),
    info: bool = True,
) -> LivezResult:
    h.require_wrk()
    result = LivezResult(duration=duration, connections=connections)
    for workers in worker_counts:
        run_for_workers(
            workers,
            duration=duration,
            connections=connections,
            pairs=pairs,
            info=info and workers == max(worker_counts),
            into=result,
        )
    return result


def report(result: LivezResult) -> None:
    print(
        f"== /livez: {h.load_tool()} -c{result.connections} -d{result.duration:.0f}s, "
        "alternating keel/bare, medians; logs at WARNING unless @INFO =="
    )
    rows: list[list[str]] = []
    for wr in result.by_workers:
        for series in (wr.keel, wr.bare, wr.info):
            if series is None:
                continue
            ref = wr.bare
            rows.append(
                [
                    f"{wr.workers}w {series.label}",
                    f"{series.rps:,.0f}",
                    f"{series.p50:.2f}",
                    f"{series.p99:.2f}",
                    "1.00x" if series is ref else h.ratio(series.rps, ref.rps),
                    "1.00x" if series is ref else h.ratio(series.p99, ref.p99),
                    " / ".join(f"{r.rps:,.0f}" for r in series.runs),
                ]
            )
    print(
        h.table(
            ["", "req/s", "p50 ms", "p99 ms", "req/s vs bare", "p99 vs bare", "runs (req/s)"],
            rows,
        )
    )
    for wr in result.by_workers:
        if wr.info is not None:
            print(
                f"{wr.workers}w keel@INFO vs keel@WARNING: {h.ratio(wr.info.rps, wr.keel.rps)} "
                f"req/s; {wr.info_log_lines} log lines for {wr.info.runs[0].requests} requests"
            )
        for note in wr.notes:
            print(f"note: {note}")
    h.print_findings(result.servers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--no-info", action="store_true", help="skip the keel@INFO run")
    args = parser.parse_args(argv)
    h.require_wrk()
    try:
        result = run(
            duration=args.duration,
            connections=args.connections,
            pairs=args.pairs,
            worker_counts=tuple(args.workers),
            info=not args.no_info,
        )
    except h.BenchError as exc:
        print(f"bench livez: {exc}", file=sys.stderr)
        return 1
    report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
