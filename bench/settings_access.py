"""Reading a settings section on a request's path, beside what building one costs.

``keel.api.ratelimit`` reads ``settings.throttle`` on every rate-limited
request. A section is now a plain attribute of ``Settings``; it used to be a
property that built a fresh ``ThrottleSettings`` from thirteen flat fields at
each read. Both are timed in the same run: the attribute read, and the
construction the property did (the reference), with the same values.

    python bench/settings_access.py [--reads 200000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from keel.settings import Settings, ThrottleSettings


def _per_read_ns(read: Callable[[], object], reads: int, rounds: int) -> float:
    results = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(reads):
            read()
        results.append((time.perf_counter_ns() - start) / reads)
    return h.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    settings = Settings()
    values = dataclasses.asdict(settings.throttle)

    def section() -> object:
        return settings.throttle

    def rebuilt() -> object:
        return ThrottleSettings(**values)

    start = time.perf_counter()
    for _ in range(100):
        Settings()
    built_ms = (time.perf_counter() - start) * 10
    attribute = _per_read_ns(section, args.reads, args.rounds)
    reference = _per_read_ns(rebuilt, args.reads, args.rounds)
    print(
        h.table(
            ["figure", "ns per read", "vs rebuilding it"],
            [
                [
                    "settings.throttle (attribute)",
                    f"{attribute:.0f}",
                    h.ratio(attribute, reference),
                ],
                ["ThrottleSettings(...) (reference)", f"{reference:.0f}", "1.00"],
            ],
        )
    )
    print(f"Settings() from the environment: {built_ms:.2f} ms (mean of 100; once per process)")


if __name__ == "__main__":
    main()
