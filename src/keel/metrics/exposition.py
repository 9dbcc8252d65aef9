"""gunicorn's multiprocess mode, and the text ``GET /metrics`` answers with.

Under ``keel serve`` every worker writes its values to its own files in one
directory per deployment (``KEEL_METRICS_DIR``); the master empties it when it
starts and names it in ``PROMETHEUS_MULTIPROC_DIR`` before any worker forks,
and a scrape, answered by whichever worker gets it, reads every file: counters
and histograms sum over every worker that ever ran, gauges combine as their
``multiprocess_mode`` says. Without that variable (one process: tests,
``keel dev``) the values live in memory.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import Final

from keel.errors import ConfigurationError
from keel.metrics import registry

__all__ = [
    "MULTIPROC_ENV",
    "clear_directory",
    "close_files",
    "forget_process",
    "multiprocess_directory",
    "prepare_directory",
    "render",
]

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# Only files of these kinds are removed: the directory is a setting, and a mistyped
# one must not lose anything else.
_OWN_FILES: Final = ("*.db", "*.exit")


def prepare_directory(directory: Path) -> Path:
    """Create ``directory`` (0700), remove what an earlier run left there, export it.

    Must run before ``prometheus_client`` is first imported in this process (it
    picks its value store at import), i.e. in the gunicorn master before fork.
    A directory that is a symbolic link, belongs to another user or that others
    may write to is refused: whoever can write there can forge every value.
    """
    values = sys.modules.get("prometheus_client.values")
    if values is not None and os.environ.get(MULTIPROC_ENV) is None:
        raise RuntimeError("prometheus_client was imported before its directory was set")
    directory = Path(os.path.abspath(directory))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    found = directory.lstat()
    if stat.S_ISLNK(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o022:
        raise ConfigurationError(
            f"the metrics directory {directory} must be a directory of this user's own "
            "that no one else may write to: set KEEL_METRICS_DIR to one"
        )
    clear_directory(directory)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def clear_directory(directory: Path, *, remove: bool = False) -> None:
    """Delete the value and marker files in ``directory`` (then the directory, if asked
    and empty); nothing else is touched."""
    for pattern in _OWN_FILES:
        for stale in directory.glob(pattern):
            stale.unlink(missing_ok=True)
    if remove:
        with contextlib.suppress(OSError):
            directory.rmdir()


def multiprocess_directory() -> Path | None:
    """The directory the workers write to, when this process runs under ``keel serve``."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def forget_process(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters keep counting in the totals)."""
    directory = multiprocess_directory()
    if directory is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def close_files() -> None:
    """Close this process's value files before it exits (unclosed, they warn at exit)."""
    values = sys.modules.get("prometheus_client.values")
    close = getattr(getattr(values, "ValueClass", None), "close_all_files", None)
    if close is not None:
        close()


def render() -> tuple[bytes, str]:
    """The exposition text of every worker (or of this process) and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    directory = multiprocess_directory()
    if directory is None:
        return generate_latest(registry()), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess

    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected, str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(collected), CONTENT_TYPE_LATEST
