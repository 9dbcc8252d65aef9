"""Run every keel bench and print a compact summary (``make bench``).

Each figure sits beside the bare-FastAPI reference measured in the same run,
served the same way; on a shared, noisy machine only the ratios mean anything.
Takes about 6 minutes. Uses ``wrk`` when installed (apt-get install wrk),
else ``bench/_load.py``. Needs Redis at ``KEEL_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) for the ``/users/me`` and login benches.

    python bench/run_all.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from bench import boot, livez, login, rss, users_me


def _section(title: str) -> None:
    print()
    print(f"##### {title}")
    sys.stdout.flush()


def summary(
    boot_result: boot.BootResult | None,
    livez_result: livez.LivezResult | None,
    rss_result: rss.RssResult | None,
) -> str:
    rows: list[list[str]] = []
    if boot_result is not None:
        rows.append(
            [
                "boot to first /livez 200, DB down (s)",
                f"{boot_result.keel_median:.3f}",
                f"{boot_result.bare_median:.3f}",
                h.ratio(boot_result.keel_median, boot_result.bare_median),
            ]
        )
    if livez_result is not None:
        for wr in livez_result.by_workers:
            w = f"{wr.workers}w"
            rows.append(
                [
                    f"/livez req/s, {w} c{livez_result.connections}",
                    f"{wr.keel.rps:,.0f}",
                    f"{wr.bare.rps:,.0f}",
                    h.ratio(wr.keel.rps, wr.bare.rps),
                ]
            )
            rows.append(
                [
                    f"/livez p50 ms, {w}",
                    f"{wr.keel.p50:.2f}",
                    f"{wr.bare.p50:.2f}",
                    h.ratio(wr.keel.p50, wr.bare.p50),
                ]
            )
            rows.append(
                [
                    f"/livez p99 ms, {w}",
                    f"{wr.keel.p99:.2f}",
                    f"{wr.bare.p99:.2f}",
                    h.ratio(wr.keel.p99, wr.bare.p99),
                ]
            )
            if wr.info is not None:
                rows.append(
                    [
                        f"/livez req/s, {w}, keel at INFO (1 run)",
                        f"{wr.info.rps:,.0f}",
                        f"{wr.bare.rps:,.0f}",
                        h.ratio(wr.info.rps, wr.bare.rps),
                    ]
                )
                rows.append(
                    [
                        f"/livez p99 ms, {w}, keel at INFO",
                        f"{wr.info.p99:.2f}",
                        f"{wr.bare.p99:.2f}",
                        h.ratio(wr.info.p99, wr.bare.p99),
                    ]
                )
    if rss_result is not None and rss_result.keel is not None and rss_result.bare is not None:
        k, b = rss_result.keel, rss_result.bare
        for name, km, bm in (
            ("worker RSS idle", k.idle, b.idle),
            ("worker RSS after load", k.loaded, b.loaded),
        ):
            kv, bv = rss.worker_rss(km), rss.worker_rss(bm)
            rows.append([f"{name} (MiB)", f"{kv / 1024:.1f}", f"{bv / 1024:.1f}", h.ratio(kv, bv)])
        kmaster, bmaster = k.loaded.master.rss_kib, b.loaded.master.rss_kib
        rows.append(
            [
                "master RSS (MiB)",
                f"{kmaster / 1024:.1f}",
                f"{bmaster / 1024:.1f}",
                h.ratio(kmaster, bmaster),
            ]
        )
    return h.table(["figure", "keel", "bare", "keel/bare"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boot-runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    args = parser.parse_args(argv)
    h.require_wrk()

    began = time.perf_counter()
    load_before = h.loadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before} at start")
    failed: list[str] = []
    boot_result: boot.BootResult | None = None
    livez_result: livez.LivezResult | None = None
    rss_result: rss.RssResult | None = None

    _section("boot")
    try:
        boot_result = boot.run(args.boot_runs)
        boot.report(boot_result)
    except Exception as exc:  # noqa: BLE001 -- report and go on with the other benches
        failed.append("boot")
        _failure("boot", exc)

    _section("livez")
    try:
        livez_result = livez.run(duration=args.duration)
        livez.report(livez_result)
    except Exception as exc:  # noqa: BLE001
        failed.append("livez")
        _failure("livez", exc)

    _section("rss")
    try:
        # Read around the livez load (idle after warm-up, then after the measured runs),
        # which saves a boot and a load; `python bench/rss.py` makes its own.
        rss_result = rss.from_livez(livez_result) if livez_result is not None else None
        if rss_result is None:
            rss_result = rss.run()
        rss.report(rss_result)
    except Exception as exc:  # noqa: BLE001
        failed.append("rss")
        _failure("rss", exc)

    _section("users_me")
    try:
        with tempfile.TemporaryDirectory(prefix="keel-bench-me-") as tmp:
            users_me.report(users_me.run(duration=args.duration, directory=Path(tmp)), "Redis")
    except Exception as exc:  # noqa: BLE001
        failed.append("users_me")
        _failure("users_me", exc)

    _section("login")
    try:
        with tempfile.TemporaryDirectory(prefix="keel-bench-login-") as tmp:
            login.report(login.run(duration=args.duration, directory=Path(tmp)))
    except Exception as exc:  # noqa: BLE001
        failed.append("login")
        _failure("login", exc)

    _section(
        f"summary (keel vs bare FastAPI, same `keel serve` stack, 2 workers unless 1w; "
        f"logs at WARNING unless INFO; {time.perf_counter() - began:.0f}s)"
    )
    print(summary(boot_result, livez_result, rss_result))
    print(f"load average: {load_before} at start, {h.loadavg()} at end (1/5/15 min)")
    print(
        "req/s ratio > 1 is better for keel; latency, boot and RSS ratios > 1 are worse. "
        "Reference figures measured earlier on a 2-core machine: bare ~10k req/s at 2w, ~6k at 1w, "
        "worker ~46-48 MiB, master ~28 MiB, boot ~0.55 s."
    )
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _failure(name: str, exc: BaseException) -> None:
    if isinstance(exc, h.BenchError):
        print(f"bench {name} failed: {exc}", file=sys.stderr)
    else:
        traceback.print_exception(exc)
    sys.stderr.flush()


if __name__ == "__main__":
    raise SystemExit(main())
