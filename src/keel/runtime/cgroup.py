"""The CPU quota and memory limit this process runs under, read from cgroup v2 or v1.

Pure file reading under ``/sys/fs/cgroup`` and ``/proc/self/cgroup``; nothing
happens at import. ``keel.runtime.gunicorn_config`` sizes the worker count from
it, and the master tells an out-of-memory kill from another SIGKILL by the
``oom_kill`` count (``keel.runtime.metrics_hooks``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

__all__ = [
    "CGROUP_ROOT",
    "PROC_SELF_CGROUP",
    "CgroupLimits",
    "read_cgroup_limits",
    "read_oom_kills",
]

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP: Final = Path("/proc/self/cgroup")

# cgroup v1 reports "no limit" as a huge page-aligned number (0x7FFFFFFFFFFFF000).
_V1_UNLIMITED: Final = 1 << 60


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    """The CPU quota (in CPUs) and memory limit (bytes) this process runs under; None = none."""

    cpus: float | None
    memory_bytes: int | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_paths(proc_self_cgroup: Path) -> dict[str, str]:
    """Map controller ("" for the v2 hierarchy) to this process's cgroup path."""
    paths: dict[str, str] = {}
    for line in (_read(proc_self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _levels(mount: Path, own: str | None) -> list[Path]:
    """``mount``/``own`` and each ancestor up to ``mount``: a limit anywhere above applies.

    Inside a container without a cgroup namespace ``own`` names a path that is not
    under this mount; then only the mount itself (the container's cgroup) counts.
    """
    start = mount / own.strip("/") if own and own.strip("/") else mount
    if not start.is_dir():
        start = mount
    levels = [start]
    while levels[-1] != mount and mount in levels[-1].parents:
        levels.append(levels[-1].parent)
    return levels


def _v2_cpus(directory: Path) -> float | None:
    text = _read(directory / "cpu.max")
    if text is None:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max":
        return None
    try:
        cpus = int(quota) / int(period or "100000")
    except (ValueError, ZeroDivisionError):
        return None
    return cpus if cpus > 0 else None


def _v1_cpus(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    try:
        cpus = int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None
    return cpus if cpus > 0 else None  # -1: no quota


def _memory(directory: Path, filename: str) -> int | None:
    text = _read(directory / filename)
    if text is None or text == "max":
        return None
    try:
        limit = int(text)
    except ValueError:
        return None
    return limit if 0 < limit < _V1_UNLIMITED else None


_Limit = TypeVar("_Limit", int, float)


def _smallest(values: Iterable[_Limit | None]) -> _Limit | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def read_cgroup_limits(
    root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> CgroupLimits:
    """Read the CPU quota and memory limit from cgroup v2, else v1.

    v2: ``cpu.max`` ("max 100000" or "150000 100000") and ``memory.max``.
    v1: ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` and ``memory.limit_in_bytes``.
    The smallest limit from this process's own cgroup up to the mount wins.
    """
    own = _own_paths(proc_self_cgroup)
    if (root / "cgroup.controllers").exists():  # unified (v2) hierarchy
        levels = _levels(root, own.get(""))
        return CgroupLimits(
            cpus=_smallest([_v2_cpus(level) for level in levels]),
            memory_bytes=_smallest([_memory(level, "memory.max") for level in levels]),
        )
    cpu_mount = next(
        (root / name for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu") if (root / name).is_dir()),
        root,
    )
    memory_mount = root / "memory" if (root / "memory").is_dir() else root
    return CgroupLimits(
        cpus=_smallest([_v1_cpus(level) for level in _levels(cpu_mount, own.get("cpu"))]),
        memory_bytes=_smallest(
            [
                _memory(level, "memory.limit_in_bytes")
                for level in _levels(memory_mount, own.get("memory"))
            ]
        ),
    )


def read_oom_kills(
    root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> int | None:
    """How many processes the OOM killer ended in this process's cgroup; None when unknown.

    v2: the ``oom_kill`` line of ``memory.events``; v1: of ``memory.oom_control``
    (Linux ≥ 4.13). Workers share the master's cgroup, so a rise between two
    looks means one of them was killed for memory.
    """
    own = _own_paths(proc_self_cgroup)
    if (root / "cgroup.controllers").exists():
        text = _read(_levels(root, own.get(""))[0] / "memory.events")
    else:
        mount = root / "memory" if (root / "memory").is_dir() else root
        text = _read(_levels(mount, own.get("memory"))[0] / "memory.oom_control")
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None
