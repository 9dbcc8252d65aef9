"""A private PostgreSQL cluster for tests that stop the database: ``initdb`` + ``pg_ctl``.

The shared server at 5432 is never stopped; an outage test makes its own
cluster in a temporary directory, on a free loopback port, with its unix
socket in that directory. ``initdb`` refuses to run as root, so as root every
server program runs as the ``postgres`` OS user (``runuser``), which then owns
the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.runtime._harness import free_port

__all__ = ["PostgresCluster", "postgres_cluster", "server_bin_dir"]

_OS_USER = "postgres"
_DEADLINE = 30


def server_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: PATH first, then Debian's versioned directories."""
    on_path = shutil.which("initdb")
    if on_path is not None and shutil.which("pg_ctl") is not None:
        return Path(on_path).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def _unusable(reason: str) -> None:
    """Skip, or fail when the run must not skip backends (CI, via ``.ci/run``)."""
    if os.environ.get("KEEL_TEST_REQUIRE_BACKENDS"):
        pytest.fail(f"{reason} but KEEL_TEST_REQUIRE_BACKENDS is set")
    pytest.skip(reason)


class PostgresCluster:
    """One private cluster: trust authentication for ``postgres``, loopback TCP on ``port``."""

    def __init__(self, bin_dir: Path, root: Path, port: int, as_user: str | None) -> None:
        self.bin_dir = bin_dir
        self.data = root / "data"
        self.socket_dir = root
        self.log = root / "server.log"
        self.port = port
        self._as_user = as_user

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self._as_user is not None:
            command = ["runuser", "-u", self._as_user, "--", *command]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_DEADLINE + 10,
            check=False,
            cwd=self.socket_dir,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        """Start the server and return once it accepts connections (``pg_ctl -w``)."""
        options: Sequence[str] = (
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.socket_dir}",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=60",
        )
        self._run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log),
            "--wait",
            "--timeout",
            str(_DEADLINE),
            "-o",
            " ".join(options),
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: ``fast`` ends every session at once, as an operator would."""
        self._run(
            "pg_ctl",
            "stop",
            "--pgdata",
            str(self.data),
            "--mode",
            mode,
            "--wait",
            "--timeout",
            str(_DEADLINE),
        )

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started private cluster, stopped (immediately) and deleted on exit.

    Skipped when the server programs are absent (failed under
    ``KEEL_TEST_REQUIRE_BACKENDS``; ``.ci/run`` installs them).
    """
    bin_dir = server_bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        _unusable("the PostgreSQL server programs (initdb, pg_ctl) are not installed")
    assert bin_dir is not None
    as_user: str | None = None
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(_OS_USER)
        except KeyError:
            _unusable(f"running as root, and there is no {_OS_USER!r} user to run initdb as")
        if shutil.which("runuser") is None:
            _unusable("running as root, and runuser is not installed")
        as_user = _OS_USER
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="keel-pg-"))
    if as_user is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
    cluster = PostgresCluster(bin_dir, root, free_port(), as_user)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if cluster.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
