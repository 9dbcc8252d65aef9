"""Resident memory of the gunicorn master and its workers, keel vs bare FastAPI.

Both apps are served the same way (``keel serve``, 2 workers, logs at WARNING)
and side by side. Memory is read from ``/proc/<pid>/status`` (VmRSS; PSS from
``smaps_rollup`` in brackets) at two points: idle after warm-up (boot, a few
hundred sequential requests and two seconds of load at 16 connections on a
route of the app itself, keel's JWKS, so every worker has built its app, then
a pause) and right after a ``wrk -t2 -c64`` load.

    python bench/rss.py [--load-seconds 5]
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
from bench import livez

IDLE_PAUSE = 1.0
WARM_SECONDS = 2.0
APP_PATH = "/.well-known/jwks.json"


@dataclass
class Snapshot:
    idle: h.TreeMemory
    loaded: h.TreeMemory


@dataclass
class RssResult:
    workers: int
    load: str  # what "after load" means, for the report
    keel: Snapshot | None = None
    bare: Snapshot | None = None
    servers: list[h.Server] = field(default_factory=list)


def worker_rss(tree: h.TreeMemory) -> float:
    """The largest worker's VmRSS in KiB (workers are identical; the max is the honest one)."""
    return float(max(w.rss_kib for w in tree.workers))


def worker_pss(tree: h.TreeMemory) -> float | None:
    values = [w.pss_kib for w in tree.workers if w.pss_kib is not None]
    return float(max(values)) if values else None


def run(*, workers: int = 2, load_seconds: float = 5.0, connections: int = 64) -> RssResult:
    h.require_wrk()
    load = f"{load_seconds:.0f}s of wrk -t2 -c{connections}"
    result = RssResult(workers=workers, load=load)
    specs = (
        h.keel_spec("keel", workers=workers, migrate=True),
        h.bare_spec("bare", workers=workers),
    )
    with h.servers(*specs) as running:
        result.servers.extend(running)
        for server in running:
            server.wait_ready("/livez")
        for server in running:
            # keel's workers answer /livez while they build the app: warm up on a route of
            # the app itself, from enough connections to reach every worker.
            path = APP_PATH if server.spec.factory is None else "/livez"
            server.wait_ready(path)
            h.warm(server.url + path, requests=400)
            h.run_wrk(server.url + path, duration=WARM_SECONDS, connections=16)
        time.sleep(IDLE_PAUSE)
        idle = {s.spec.label: s.memory() for s in running}
        loaded = {}
        for server in running:
            h.run_wrk(server.url + "/livez", duration=load_seconds, connections=connections)
            loaded[server.spec.label] = server.memory()
        result.keel = Snapshot(idle["keel"], loaded["keel"])
        result.bare = Snapshot(idle["bare"], loaded["bare"])
    return result


def from_livez(result: livez.LivezResult) -> RssResult | None:
    """The same figures, read around ``bench/livez.py``'s load (what run_all reports)."""
    for wr in result.by_workers:
        if "keel" in wr.memory and "bare" in wr.memory:
            load = (
                f"the livez bench's {wr.load_seconds:.0f}s of wrk -t2 -c{result.connections} "
                "per app"
            )
            return RssResult(
                workers=wr.workers,
                load=load,
                keel=Snapshot(*wr.memory["keel"]),
                bare=Snapshot(*wr.memory["bare"]),
            )
    return None


def _fmt(kib: float | None) -> str:
    return "n/a" if kib is None else h.mib(kib)


def _fmt_pair(rss: float, pss: float | None) -> str:
    return f"{h.mib(rss)} ({_fmt(pss)})"


def report(result: RssResult) -> None:
    keel, bare = result.keel, result.bare
    if keel is None or bare is None:
        print("== rss: no result ==")
        return
    print(
        f"== rss: VmRSS (PSS), {result.workers} workers, largest worker; idle after warm-up, "
        f"and right after {result.load} =="
    )
    rows = []
    for name, k, b in (("idle", keel.idle, bare.idle), ("after load", keel.loaded, bare.loaded)):
        rows.append(
            [
                f"worker, {name}",
                _fmt_pair(worker_rss(k), worker_pss(k)),
                _fmt_pair(worker_rss(b), worker_pss(b)),
                h.ratio(worker_rss(k), worker_rss(b)),
            ]
        )
    km, bm = keel.loaded.master, bare.loaded.master
    rows.append(
        [
            "master",
            _fmt_pair(km.rss_kib, km.pss_kib),
            _fmt_pair(bm.rss_kib, bm.pss_kib),
            h.ratio(km.rss_kib, bm.rss_kib),
        ]
    )
    total_k = km.rss_kib + sum(w.rss_kib for w in keel.loaded.workers)
    total_b = bm.rss_kib + sum(w.rss_kib for w in bare.loaded.workers)
    rows.append(["total tree, loaded", h.mib(total_k), h.mib(total_b), h.ratio(total_k, total_b)])
    print(h.table(["", "keel", "bare", "keel/bare"], rows))
    for label, snap in (("keel", keel), ("bare", bare)):
        per = ", ".join(
            f"{w.pid}: {h.mib(a.rss_kib)} -> {h.mib(w.rss_kib)}"
            for a, w in zip(snap.idle.workers, snap.loaded.workers, strict=False)
        )
        print(f"{label} workers idle -> after load: {per}")
    h.print_findings(result.servers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--load-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    h.require_wrk()
    try:
        result = run(workers=args.workers, load_seconds=args.load_seconds)
    except h.BenchError as exc:
        print(f"bench rss: {exc}", file=sys.stderr)
        return 1
    report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
