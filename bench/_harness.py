"""Shared helpers for keel's benchmarks.

Every server is started exactly like production (``keel serve [--factory ...]``:
gunicorn master + keel's uvicorn worker class), in its own process group, on a
free loopback port, with its logs captured to a temporary file. Load comes from
``wrk``; memory comes from ``/proc``. Nothing here talks to anything but
127.0.0.1.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

REPO = Path(__file__).resolve().parent.parent
BARE_FACTORY = "bench.bare_app:create"
DB_DOWN_URL = "postgresql://127.0.0.1:1/x"
HOST = "127.0.0.1"

# Configuration a developer's shell might carry that must not leak into a bench.
_PLATFORM_VARS = frozenset(
    {"PORT", "WEB_CONCURRENCY", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "GUNICORN_CMD_ARGS"}
)


class BenchError(RuntimeError):
    """A bench could not produce a figure (server did not start, wrk failed...)."""


# --------------------------------------------------------------------------- tools


def require_wrk() -> str:
    """The path of ``wrk``, or exit 2 saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        print(
            "bench: `wrk` was not found on PATH: install wrk (apt-get install wrk)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return path


def keel_command() -> list[str]:
    """``keel`` from the running interpreter's environment (the project's venv)."""
    script = Path(sys.executable).parent / "keel"
    if script.exists():
        return [str(script)]
    found = shutil.which("keel")
    if found is not None:
        return [found]
    return [sys.executable, "-m", "keel"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class ServerSpec:
    """One way of serving an app: which factory, how many workers, which log level."""

    label: str
    factory: str | None = None  # None: keel's own default factory
    workers: int = 2
    log_level: str = "WARNING"
    database_url: str | None = None  # None: a fresh SQLite file in the server's temp dir
    migrate: bool = False  # run `keel db upgrade` on that SQLite file first
    extra_env: tuple[tuple[str, str], ...] = ()


@dataclass
class LogFindings:
    """Warning-or-worse lines from a server's stdout/stderr, deduplicated."""

    counts: Counter[str] = field(default_factory=Counter)
    lines: int = 0

    def merge(self, other: LogFindings) -> None:
        self.counts.update(other.counts)
        self.lines += other.lines

    def report(self, label: str, limit: int = 8) -> list[str]:
        out = []
        for key, count in self.counts.most_common(limit):
            out.append(f"  [{label}] {count}x {key}")
        hidden = len(self.counts) - limit
        if hidden > 0:
            out.append(f"  [{label}] ... and {hidden} more distinct lines")
        return out


_NOTABLE_TEXT = re.compile(
    r"traceback|exception|error|warning|critical|destroyed but it is pending|killed|timeout",
    re.IGNORECASE,
)
_NOISY_LEVELS = frozenset({"warning", "error", "critical", "fatal"})


def scan_log(text: str) -> LogFindings:
    """Collect the lines of a captured log that a reviewer would want to see."""
    findings = LogFindings()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        findings.lines += 1
        key: str | None = None
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                level = str(record.get("level", "")).lower()
                if level in _NOISY_LEVELS:
                    name = str(record.get("event", record.get("message", "")))[:120]
                    extra = _record_detail(record)
                    key = f"{level} {record.get('logger', '?')}: {name}{extra}"
                continue
        if _NOTABLE_TEXT.search(line):
            key = line[:160]
        if key is not None:
            findings.counts[key] += 1
    return findings


def _record_detail(record: dict[str, object]) -> str:
    parts = []
    for name in ("error", "exc_type", "warmup", "name", "task", "reason", "step"):
        if name in record:
            parts.append(f"{name}={str(record[name])[:60]}")
    return f" ({', '.join(parts)})" if parts else ""


@dataclass(frozen=True)
class Mem:
    pid: int
    rss_kib: int
    pss_kib: int | None


@dataclass(frozen=True)
class TreeMemory:
    master: Mem
    workers: tuple[Mem, ...]


def _read_kib(path: Path, key: str) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def mem_of(pid: int) -> Mem:
    rss = _read_kib(Path(f"/proc/{pid}/status"), "VmRSS")
    if rss is None:
        raise BenchError(f"cannot read VmRSS of pid {pid}")
    pss = _read_kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss")
    return Mem(pid=pid, rss_kib=rss, pss_kib=pss)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..." -- comm may contain spaces and parentheses.
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


class Server:
    """A ``keel serve`` process tree; use as a context manager so it always stops."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="keel-bench-")
        self.dir = Path(self._tmp.name)
        self.log_path = self.dir / "server.log"
        self._log_file: BinaryIO | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.findings = LogFindings()
        self.stop_seconds: float | None = None
        self.returncode: int | None = None
        self.killed = False

    # -- environment

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.upper().startswith("KEEL_") and k.upper() not in _PLATFORM_VARS
        }
        database_url = self.spec.database_url or f"sqlite:///{self.dir / 'keel.sqlite3'}"
        env.update(
            {
                "PORT": str(self.port),
                "WEB_CONCURRENCY": str(self.spec.workers),
                "DATABASE_URL": database_url,
                "KEEL_LOG_LEVEL": self.spec.log_level,
                "KEEL_BIND": HOST,
                # `bench.bare_app` must be importable by the workers; same for both apps.
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
                ),
            }
        )
        env.update(dict(self.spec.extra_env))
        return env

    def command(self) -> list[str]:
        cmd = [*keel_command(), "serve"]
        if self.spec.factory is not None:
            cmd += ["--factory", self.spec.factory]
        return cmd

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- lifecycle

    def migrate(self) -> None:
        """Give this server a SQLite file at the schema head (``keel db upgrade``, once)."""
        if self.spec.database_url is not None:
            raise BenchError(f"{self.spec.label}: migrate=True needs the bench's own SQLite file")
        shutil.copyfile(_migrated_template(self.env()), self.dir / "keel.sqlite3")

    def start(self) -> None:
        if self.spec.migrate:
            self.migrate()
        command, env = self.command(), self.env()
        log = self.log_path.open("wb")
        self._log_file = log
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            command,
            env=env,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: killpg reaches only this tree
        )

    def wait_ready(self, path: str = "/livez", timeout: float = 30.0) -> float:
        """Seconds from spawn to the first 200 on ``path``."""
        proc = self._require_proc()
        deadline = self.started_at + timeout
        while True:
            if proc.poll() is not None:
                raise BenchError(
                    f"{self.spec.label}: server exited with {proc.returncode} before "
                    f"answering {path}:\n{self.log_tail()}"
                )
            status = _get_status(HOST, self.port, path)
            now = time.perf_counter()
            if status == 200:
                return now - self.started_at
            if now > deadline:
                raise BenchError(
                    f"{self.spec.label}: no 200 on {path} after {timeout:.0f}s "
                    f"(last status {status}):\n{self.log_tail()}"
                )
            time.sleep(0.005)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the master, wait; SIGKILL the process group if it does not exit."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        began = time.perf_counter()
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.killed = True
                    _killpg(proc.pid)
                    proc.wait(timeout=10)
            self.stop_seconds = time.perf_counter() - began
            self.returncode = proc.returncode
            # Workers orphaned by a dead master would still be in our process group.
            if _group_alive(proc.pid):
                time.sleep(0.5)
                if _group_alive(proc.pid):
                    self.killed = True
                    _killpg(proc.pid)
        finally:
            if self._log_file is not None:
                with contextlib.suppress(OSError):
                    self._log_file.close()
                self._log_file = None
            self.findings = scan_log(self.read_log())
            if self.killed:
                self.findings.counts["bench: had to SIGKILL the process group"] += 1

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self._tmp.cleanup()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- observation

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_lines_since(self, offset: int) -> int:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().count(b"\n")
        except OSError:
            return 0

    def log_tail(self, lines: int = 15) -> str:
        tail = self.read_log().splitlines()[-lines:]
        return "\n".join("    " + line[:300] for line in tail)

    def memory(self) -> TreeMemory:
        """VmRSS (and PSS) of the gunicorn master and each of its workers."""
        proc = self._require_proc()
        master = proc.pid
        kids = children_of(master)
        # If `keel serve` ever execs through a wrapper, descend to the real master.
        while len(kids) == 1 and children_of(kids[0]) and self.spec.workers > 1:
            master, kids = kids[0], children_of(kids[0])
        if not kids:
            raise BenchError(f"{self.spec.label}: master {master} has no worker processes")
        return TreeMemory(master=mem_of(master), workers=tuple(mem_of(pid) for pid in kids))

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise BenchError(f"{self.spec.label}: server is not running")
        return self.proc


_template: list[Path] = []


def _migrated_template(env: dict[str, str]) -> Path:
    """A SQLite file migrated to head by ``keel db upgrade``, made once per bench process."""
    if _template:
        return _template[0]
    directory = Path(tempfile.mkdtemp(prefix="keel-bench-db-"))
    atexit.register(shutil.rmtree, directory, True)
    path = directory / "keel.sqlite3"
    done = subprocess.run(
        [*keel_command(), "db", "upgrade"],
        env={**env, "DATABASE_URL": f"sqlite:///{path}"},
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise BenchError("`keel db upgrade` failed:\n    " + "\n    ".join(tail))
    _template.append(path)
    return path


def _get_status(host: str, port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def warm(url: str, requests: int = 200) -> None:
    """A few sequential requests so every import/route cache is hot."""
    host, port, path = _split_url(url)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        for _ in range(requests):
            conn.request("GET", path)
            conn.getresponse().read()
    finally:
        conn.close()


def _split_url(url: str) -> tuple[str, int, str]:
    match = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)?", url)
    if match is None:
        raise ValueError(url)
    return match.group(1), int(match.group(2)), match.group(3) or "/"


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: int
    non_2xx: int
    raw: str


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DIST = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(text: str) -> WrkResult:
    """Parse ``wrk --latency`` output; latencies are returned in milliseconds."""
    rps = _RPS.search(text)
    total = _TOTAL.search(text)
    dist = {float(p): float(v) * _UNIT_MS[u] for p, v, u in _DIST.findall(text)}
    if rps is None or total is None or 50.0 not in dist or 99.0 not in dist:
        raise BenchError(f"unexpected wrk output:\n{text}")
    socket_errors = _SOCKET.search(text)
    non_2xx = _NON2XX.search(text)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=dist[50.0],
        p99_ms=dist[99.0],
        requests=int(total.group(1)),
        socket_errors=sum(int(g) for g in socket_errors.groups()) if socket_errors else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        raw=text,
    )


def run_wrk(
    url: str, *, duration: float = 10.0, connections: int = 64, threads: int = 2
) -> WrkResult:
    """``wrk --latency -t2 -c64 -d10s URL`` (by default) and its parsed figures."""
    wrk = require_wrk()
    seconds = max(1, round(duration))
    argv = [wrk, "--latency", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout=5s"]
    argv.append(url)
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


# --------------------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(value: float, reference: float) -> str:
    if reference == 0:
        return "n/a"
    return f"{value / reference:.2f}x"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        cells_out = [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        parts = [first.ljust(widths[0]), *cells_out]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out)


@contextlib.contextmanager
def servers(*specs: ServerSpec) -> Iterator[list[Server]]:
    """Start several servers; every one of them is stopped on the way out."""
    started: list[Server] = []
    try:
        for spec in specs:
            server = Server(spec)
            started.append(server)
            server.start()
        yield started
    finally:
        for server in started:
            server.close()


def keel_spec(
    label: str = "keel",
    *,
    workers: int = 2,
    log_level: str = "WARNING",
    database_url: str | None = None,
    migrate: bool = False,
) -> ServerSpec:
    """keel's own app (``keel serve``, default factory)."""
    return ServerSpec(label, None, workers, log_level, database_url, migrate)


def bare_spec(
    label: str = "bare",
    *,
    workers: int = 2,
    log_level: str = "WARNING",
    database_url: str | None = None,
) -> ServerSpec:
    """The reference: a bare FastAPI app served the same way (``--factory``)."""
    return ServerSpec(label, BARE_FACTORY, workers, log_level, database_url, False)


def print_findings(servers_: Sequence[Server]) -> None:
    merged: dict[str, LogFindings] = {}
    for server in servers_:
        merged.setdefault(server.spec.label, LogFindings()).merge(server.findings)
    lines = []
    for label, findings in merged.items():
        lines += findings.report(label)
    if lines:
        print("log lines at warning or above (server stdout/stderr):")
        print("\n".join(lines))
    else:
        print("logs: no warning-or-worse lines")
