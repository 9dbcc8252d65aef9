"""keel's container image, built and run for real with podman.

``scripts/container-base.sh`` builds a python base from Debian's packages and
keel's image on it (``BASE_IMAGE``), both cached between runs. The image then
migrates a private PostgreSQL database (``keel db upgrade``, one-shot, as
compose and the platforms run it), serves in production mode with the
machine's PostgreSQL and Redis (host network, a Redis namespace of its own),
answers ``/livez``, ``/readyz`` and its own ``HEALTHCHECK``, creates an admin
with ``keel users create-admin`` who logs in, runs every process as UID 10001,
holds no compiler, and stops on SIGTERM with status 0 within the grace period.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.unit.cache._servers import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "container-base.sh"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
LIMITS = ["--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
KEEL_UID = 10001
GRACE = 20  # seconds podman stop waits before SIGKILL

pytestmark = pytest.mark.container


def _unusable(reason: str) -> None:
    if os.environ.get("KEEL_TEST_REQUIRE_BACKENDS"):
        pytest.fail(f"{reason} but KEEL_TEST_REQUIRE_BACKENDS is set")
    pytest.skip(reason)


def _podman(*args: str, timeout: float = 120, stdin: str | None = None) -> str:
    result = subprocess.run(
        [*PODMAN, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"podman {args[0]}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """keel's image, built (or reused) by the script; skips only where podman cannot run."""
    missing = [p for p in ("podman", "runc", "mmdebstrap") if shutil.which(p) is None]
    if missing:
        _unusable(f"{', '.join(missing)} not on PATH (apt-get install podman runc mmdebstrap)")
    probe = subprocess.run(
        [*PODMAN, "info"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        _unusable(f"podman cannot be used here: {probe.stderr.strip()[:300]}")
    built = subprocess.run(
        [str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=540, check=False
    )
    assert built.returncode == 0, built.stdout + built.stderr[-4000:]
    return built.stdout.strip().splitlines()[-1]


@pytest.fixture
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A private PostgreSQL database on the machine's server, dropped afterwards."""
    import asyncpg

    name = f"keeltest_{secrets.token_hex(6)}"
    admin = postgres_admin_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(admin)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _env_args(env: dict[str, str]) -> list[str]:
    return [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]


def _http(
    method: str, url: str, body: dict[str, str] | None = None, token: str = ""
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http://127.0.0.1
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _wait_for(url: str, deadline: float, status_is: str | None = None) -> None:
    """Until ``url`` answers 200 (with ``{"status": status_is}`` when given)."""
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = _http("GET", url)
            if status == 200 and (status_is is None or body["status"] == status_is):
                return
            last = (status, body)
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 in time: {last!r}")


def _uids(pid: int) -> list[int]:
    """The real UID of ``pid`` and of every process below it."""
    uids, pending = [], [pid]
    while pending:
        current = pending.pop()
        status = Path(f"/proc/{current}/status").read_text()
        uids.append(int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1]))
        for task in Path(f"/proc/{current}/task").iterdir():
            pending.extend(int(c) for c in (task / "children").read_text().split())
    return uids


@pytest.mark.timeout(600)
def test_the_image_serves_logs_in_runs_unprivileged_and_stops_cleanly_on_sigterm(
    image: str, database_url: str, redis_url: str, redis_namespace: str
) -> None:
    # No compiler, and no build tool left from the build stage.
    found = _podman(
        "run", "--rm", *LIMITS, image, "python3", "-c",
        "import shutil, os; print([n for n in ('gcc', 'cc', 'c++', 'g++', 'clang', 'make', 'uv')"
        " if shutil.which(n)] + [p for p in ('/opt/uv',) if os.path.exists(p)])",
    )  # fmt: skip
    assert found.strip() == "[]"
    # Bytecode was compiled at build: a worker that imports keel compiles nothing.
    compiled = _podman(
        "run", "--rm", *LIMITS, image, "python3", "-c",
        "import keel.api.app, pathlib, sys; print(len(list(pathlib.Path(keel.__file__).parent"
        ".rglob(f'*.cpython-{sys.version_info[0]}{sys.version_info[1]}.pyc'))))",
    )  # fmt: skip
    assert int(compiled) > 50
    config = json.loads(_podman("image", "inspect", image))[0]["Config"]
    assert config["User"] == f"{KEEL_UID}:{KEEL_UID}"
    assert config["StopSignal"] in {"SIGTERM", "15"}
    assert config["Cmd"] == ["keel", "serve"]
    assert "KEEL_BIND=0.0.0.0" in config["Env"]

    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "KEEL_CACHE_NAMESPACE": redis_namespace,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "KEEL_AUDIT_KEY": secrets.token_urlsafe(48),
        "KEEL_JWT_ALGORITHM": "HS256",
        "KEEL_JWT_SECRET": secrets.token_urlsafe(48),
        "KEEL_PUBLIC_URL": "https://id.example.test",
        # A short drain (production's default is 5 s) within a 15 s grace: stops stay quick.
        "KEEL_DRAIN_SECONDS": "1",
        "KEEL_GRACEFUL_TIMEOUT": "15",
    }
    migrated = _podman("run", "--rm", *LIMITS, *_env_args(env), image, "keel", "db", "upgrade")
    assert "keel db: at" in migrated

    name = f"keeltest-{secrets.token_hex(4)}"
    _podman("run", "--detach", "--name", name, *LIMITS, *_env_args(env), image)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        _wait_for(f"{base}/livez", deadline)
        # "degraded" until each worker's invalidation channel has subscribed.
        _wait_for(f"{base}/readyz", deadline, status_is="ok")
        _podman("healthcheck", "run", name)

        email, password = "admin@example.test", "a long and unguessable passphrase 73"
        _podman(
            "exec", "-i", name, "keel", "users", "create-admin", "--email", email,
            stdin=password + "\n",
        )  # fmt: skip
        status, tokens = _http("POST", f"{base}/auth/login", {"email": email, "password": password})
        assert status == 200, tokens
        status, me = _http("GET", f"{base}/users/me", token=tokens["access_token"])
        assert (status, me["email"]) == (200, email)

        assert _podman("exec", name, "id", "-u").strip() == str(KEEL_UID)
        pid = int(_podman("inspect", "--format", "{{.State.Pid}}", name))
        uids = _uids(pid)
        assert len(uids) >= 3  # gunicorn and its two workers
        assert set(uids) == {KEEL_UID}

        started = time.monotonic()
        _podman("stop", "--time", str(GRACE), name, timeout=GRACE + 30)
        assert time.monotonic() - started < GRACE
        state = json.loads(_podman("inspect", name))[0]["State"]
        assert (state["ExitCode"], state.get("OOMKilled", False)) == (0, False)
    finally:
        # Shown by pytest only when the test failed.
        logs = subprocess.run(
            [*PODMAN, "logs", "--tail", "40", name], capture_output=True, text=True, timeout=60
        )
        print(logs.stdout, logs.stderr)
        subprocess.run(
            [*PODMAN, "rm", "--force", "--time", "0", name],
            capture_output=True,
            timeout=60,
            check=False,
        )
