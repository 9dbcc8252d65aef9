"""Boot time: process spawn -> first ``GET /livez`` 200, keel vs bare FastAPI.

The database is down (``DATABASE_URL=postgresql://127.0.0.1:1/x``) and keel's
Redis is black-holed (a port that accepts connections and never answers):
keel must still answer ``/livez`` at once, since startup never blocks serving.
Runs alternate keel, bare, keel, bare... and the median of each is reported
with the ratio. Also reported, as side figures: spawn -> the first answer of
keel's app itself (``GET /.well-known/jwks.json``, which needs neither the
database nor Redis: a worker answers ``/livez`` while it is still building the
app), and SIGTERM -> exit of the whole server.

    python bench/boot.py [--runs 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h

SETTLE_SECONDS = 0.3  # let the other worker finish booting before SIGTERM


@dataclass
class BootResult:
    runs: int
    keel: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    keel_app: list[float] = field(default_factory=list)
    keel_stop: list[float] = field(default_factory=list)
    bare_stop: list[float] = field(default_factory=list)
    keel_exit: list[int | None] = field(default_factory=list)
    bare_exit: list[int | None] = field(default_factory=list)
    servers: list[h.Server] = field(default_factory=list)

    @property
    def keel_median(self) -> float:
        return h.median(self.keel)

    @property
    def bare_median(self) -> float:
        return h.median(self.bare)


def run(runs: int = 5, workers: int = 2) -> BootResult:
    result = BootResult(runs=runs)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hole:
        hole.bind((h.HOST, 0))
        hole.listen(128)  # accepts (the kernel's backlog), never answers: a hung Redis
        redis = f"redis://{h.HOST}:{hole.getsockname()[1]}/0"
        keel = h.keel_spec("keel", workers=workers, database_url=h.DB_DOWN_URL)
        specs = (
            dataclasses.replace(keel, extra_env=(("REDIS_URL", redis),)),
            h.bare_spec("bare", workers=workers, database_url=h.DB_DOWN_URL),
        )
        for _ in range(runs):
            for spec in specs:
                _boot_once(spec, result)
    return result


def _boot_once(spec: h.ServerSpec, result: BootResult) -> None:
    server = h.Server(spec)
    result.servers.append(server)
    app_seconds = float("nan")
    try:
        server.start()
        seconds = server.wait_ready("/livez")
        if spec.factory is None:
            app_seconds = server.wait_ready("/.well-known/jwks.json")
        time.sleep(SETTLE_SECONDS)
    finally:
        server.close()
    stop = server.stop_seconds if server.stop_seconds is not None else float("nan")
    if spec.factory is None:
        result.keel.append(seconds)
        result.keel_app.append(app_seconds)
        result.keel_stop.append(stop)
        result.keel_exit.append(server.returncode)
    else:
        result.bare.append(seconds)
        result.bare_stop.append(stop)
        result.bare_exit.append(server.returncode)


def report(result: BootResult) -> None:
    print(
        f"== boot: spawn -> first /livez 200, database down, Redis black-holed, "
        f"median of {result.runs} =="
    )
    rows = [
        [
            "boot (s)",
            f"{result.keel_median:.3f}",
            f"{result.bare_median:.3f}",
            h.ratio(result.keel_median, result.bare_median),
        ],
        [
            "keel's app answering (s)",
            f"{h.median(result.keel_app):.3f}",
            "",
            h.ratio(h.median(result.keel_app), result.bare_median),
        ],
        [
            "SIGTERM -> exit (s)",
            f"{h.median(result.keel_stop):.3f}",
            f"{h.median(result.bare_stop):.3f}",
            h.ratio(h.median(result.keel_stop), h.median(result.bare_stop)),
        ],
    ]
    print(h.table(["", "keel", "bare", "keel/bare"], rows))
    print("keel runs (s): " + ", ".join(f"{v:.3f}" for v in result.keel))
    print("bare runs (s): " + ", ".join(f"{v:.3f}" for v in result.bare))
    print(
        f"exit statuses: keel {sorted(set(map(str, result.keel_exit)))}, "
        f"bare {sorted(set(map(str, result.bare_exit)))}"
    )
    h.print_findings(result.servers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        result = run(args.runs, args.workers)
    except h.BenchError as exc:
        print(f"bench boot: {exc}", file=sys.stderr)
        return 1
    report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
