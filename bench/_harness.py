"""Shared helpers for keel's benchmarks.

Every server is started exactly like production (``keel serve [--factory ...]``:
gunicorn master + keel's uvicorn worker class), in its own process group, on a
free loopback port, with its logs captured to a temporary file. Load comes from
``wrk`` when it is installed, else from ``bench/_load.py`` (a closed-loop
generator on uvloop, same figures, more CPU of its own); memory comes from
``/proc``. Nothing here talks to anything but 127.0.0.1.
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
import threading
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


def require_wrk() -> str | None:
    """The path of ``wrk``; ``None`` (said once on stderr) when the Python generator stands in."""
    path = shutil.which("wrk")
    if path is None and not _said_no_wrk:
        _said_no_wrk.append(True)
        print(
            "bench: `wrk` is not on PATH: using bench/_load.py, a Python load generator "
            "(more client CPU on the same cores; compare ratios, not absolute figures)",
            file=sys.stderr,
        )
    return path


_said_no_wrk: list[bool] = []


def load_tool() -> str:
    """``"wrk"`` or ``"bench/_load.py"``: what drives the load, for the reports."""
    return "wrk" if shutil.which("wrk") else "bench/_load.py"


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


def upgrade_database(server: Server) -> None:
    """``keel db upgrade`` on the database ``server`` uses (for a ``database_url`` of its own)."""
    done = subprocess.run(
        [*keel_command(), "db", "upgrade"],
        env=server.env(),
        cwd=server.dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise BenchError("`keel db upgrade` failed:\n    " + "\n    ".join(tail))


def create_admin(server: Server, email: str, password: str) -> None:
    """An active, verified account on ``server``'s database, made by keel's own CLI.

    ``keel users create-admin`` (password on stdin) hashes with the server's
    settings, audits the creation and leaves the account ready to log in.
    """
    done = subprocess.run(
        [*keel_command(), "users", "create-admin", "--email", email],
        env=server.env(),
        cwd=server.dir,
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise BenchError("`keel users create-admin` failed:\n    " + "\n    ".join(tail))


class PacedProbe:
    """GETs ``path`` at a fixed, low rate in a thread, each on a fresh connection; latencies kept.

    The probe measures what a load balancer's health check would see during a
    load test without adding load of its own: ``rate`` requests per second at
    most, never more than one in flight. A request that fails or does not
    answer 200 within ``timeout`` is counted in ``failures``.
    """

    def __init__(self, port: int, path: str, *, rate: float = 20.0, timeout: float = 5.0) -> None:
        self._port = port
        self._path = path
        self._interval = 1.0 / rate
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-probe", daemon=True)
        self.latencies_ms: list[float] = []
        self.failures = 0

    def __enter__(self) -> PacedProbe:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout + 1.0)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                conn = http.client.HTTPConnection(HOST, self._port, timeout=self._timeout)
                try:
                    conn.request("GET", self._path, headers={"Connection": "close"})
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                finally:
                    conn.close()
            except OSError:
                ok = False
            if ok:
                self.latencies_ms.append((time.monotonic() - began) * 1000)
            else:
                self.failures += 1
            next_at += self._interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def percentile(self, fraction: float) -> float:
        """The latency at ``fraction`` (0..1) of the answered probes, in ms."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class PeakMemory:
    """Samples the workers' VmRSS every ``interval`` seconds in a thread; reads VmHWM at the end.

    ``peak_rss_kib`` is the largest worker RSS seen while sampling; ``hwm_kib``
    the largest worker high-water mark (the kernel's own peak, since the
    worker started, so it includes boot and anything between samples).
    """

    def __init__(self, server: Server, interval: float = 0.05) -> None:
        self._server = server
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_rss_kib = 0
        self.hwm_kib = 0
        self.samples = 0

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        for pid in self._workers():
            hwm = _read_kib(Path(f"/proc/{pid}/status"), "VmHWM")
            self.hwm_kib = max(self.hwm_kib, hwm or 0)

    def _workers(self) -> list[int]:
        proc = self._server.proc
        return children_of(proc.pid) if proc is not None else []

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in self._workers():
                rss = _read_kib(Path(f"/proc/{pid}/status"), "VmRSS")
                self.peak_rss_kib = max(self.peak_rss_kib, rss or 0)
            self.samples += 1
            self._stop.wait(self._interval)


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
    url: str,
    *,
    duration: float = 10.0,
    connections: int = 64,
    threads: int = 2,
    headers: Sequence[str] = (),
    method: str = "GET",
    body: str = "",
) -> WrkResult:
    """``wrk --latency -t2 -c64 -d10s URL`` (by default) and its parsed figures.

    Without ``wrk``, the same load from ``bench/_load.py`` (see the module docstring).
    """
    return start_load(
        url,
        duration=duration,
        connections=connections,
        threads=threads,
        headers=headers,
        method=method,
        body=body,
    ).result()


class Load:
    """A load generator running in the background; ``result()`` waits for its figures."""

    def __init__(self, argv: list[str], timeout: float, wrk: bool, script: Path | None) -> None:
        self._proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._timeout = timeout
        self._wrk = wrk
        self._script = script

    def result(self) -> WrkResult:
        try:
            stdout, stderr = self._proc.communicate(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            raise BenchError("the load generator did not finish in time") from None
        finally:
            if self._script is not None:
                self._script.unlink(missing_ok=True)
        if self._proc.returncode != 0:
            raise BenchError(f"load generator exited with {self._proc.returncode}:\n{stderr}")
        if self._wrk:
            return parse_wrk(stdout)
        figures = json.loads(stdout)
        return WrkResult(
            rps=float(figures["rps"]),
            p50_ms=float(figures["p50_ms"]),
            p99_ms=float(figures["p99_ms"]),
            requests=int(figures["requests"]),
            socket_errors=int(figures["socket_errors"]),
            non_2xx=int(figures["non_2xx"]),
            raw=stdout,
        )


def start_load(
    url: str,
    *,
    duration: float = 10.0,
    connections: int = 64,
    threads: int = 2,
    headers: Sequence[str] = (),
    method: str = "GET",
    body: str = "",
) -> Load:
    """Start ``wrk`` (or ``bench/_load.py``) against ``url``; read it with ``result()``."""
    wrk = require_wrk()
    seconds = max(1, round(duration))
    script: Path | None = None
    if wrk is not None:
        argv = [wrk, "--latency", f"-t{threads}", f"-c{connections}", f"-d{seconds}s"]
        argv.append("--timeout=5s")
        for header in headers:
            argv += ["-H", header]
        if method != "GET" or body:
            fd, name = tempfile.mkstemp(suffix=".lua", prefix="keel-bench-")
            with os.fdopen(fd, "w") as out:
                out.write(f"wrk.method = {json.dumps(method)}\nwrk.body = {json.dumps(body)}\n")
            script = Path(name)
            argv += ["-s", name]
        argv.append(url)
    else:
        argv = [sys.executable, "-m", "bench._load", url, f"--duration={seconds}"]
        argv += [f"--connections={connections}", f"--method={method}", f"--body={body}"]
        argv += [f"--header={header}" for header in headers]
    return Load(argv, seconds + 30, wrk is not None, script)


# --------------------------------------------------------------------------- reporting


@dataclass
class Series:
    """Repeated runs of one load; the report quotes their medians."""

    label: str
    runs: list[WrkResult] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return median([r.rps for r in self.runs])

    @property
    def p50(self) -> float:
        return median([r.p50_ms for r in self.runs])

    @property
    def p99(self) -> float:
        return median([r.p99_ms for r in self.runs])

    def add(self, run: WrkResult, notes: list[str]) -> WrkResult:
        """Keep ``run``; note socket errors and non-2xx answers in ``notes``."""
        self.runs.append(run)
        if run.socket_errors or run.non_2xx:
            notes.append(
                f"{self.label}: {run.socket_errors} socket errors, {run.non_2xx} non-2xx "
                f"in {run.requests} requests"
            )
        return run

    def row(self, reference: Series | None = None) -> list[str]:
        """req/s, p50, p99, the req/s ratio to ``reference`` and each run's req/s."""
        return [
            self.label,
            f"{self.rps:,.0f}",
            f"{self.p50:.2f}",
            f"{self.p99:.2f}",
            ratio(self.rps, reference.rps) if reference is not None else "",
            " / ".join(f"{r.rps:,.0f}" for r in self.runs),
        ]


SERIES_HEADERS = ("", "req/s", "p50 ms", "p99 ms", "req/s vs ref", "runs (req/s)")


def loadavg() -> str:
    """The 1/5/15-minute load averages: the machine is shared, say how busy it was."""
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


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
