"""schemathesis against a live keel: every check, every phase, no failure.

A real ``keel serve`` (two workers) on a free loopback port, on the embedded
default (SQLite and the machine's state file) and on PostgreSQL + Redis (fewer
examples: what it adds is what only PostgreSQL refuses, such as NUL in text,
which must never come back as a 500), with an admin made by
``keel users create-admin``: schemathesis
logs in through ``/auth/login`` (``schemathesis.toml``) and logs in again
whenever the run itself ends the session (logout, ``DELETE /sessions/...``,
revoking its own sessions), so every operation, the admin ones included, is
exercised authenticated. The coverage, fuzzing and stateful phases run with a
fixed seed and a bounded number of examples per operation.

The run's server has the brute-force limits off (``KEEL_THROTTLE_ENABLED=false``):
a fuzzer sends hundreds of wrong passwords and registrations from one address,
which the production defaults rightly refuse with 429 long before the run ends.
The response-time floors are off too, as for every test (``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.db import migrate
from keel.settings import Settings
from tests.runtime._harness import REPO_ROOT, running_server

CONFIG = Path(__file__).with_name("schemathesis.toml")
EMAIL = "contract-admin@keel.example"
PASSWORD = "lantern quietly under the orchard 7"
SEED = 20261207
OPERATIONS = 19

pytestmark = pytest.mark.runtime


@dataclass(frozen=True)
class Backend:
    database_url: str
    env: dict[str, str]
    max_examples: int


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend(f"sqlite:///{tmp_path / 'keel.sqlite3'}", {}, max_examples=100)
    url: str = request.getfixturevalue("postgres_url")
    redis_url: str = request.getfixturevalue("redis_url")
    namespace: str = request.getfixturevalue("redis_namespace")
    env = {"DATABASE_URL": url, "REDIS_URL": redis_url, "KEEL_CACHE_NAMESPACE": namespace}
    return Backend(url, env, max_examples=30)


def _server_env(tmp_path: Path) -> dict[str, str]:
    return {
        "WEB_CONCURRENCY": "2",
        "KEEL_THROTTLE_ENABLED": "false",
        "KEEL_ENUMERATION_FLOOR": "0",
        "KEEL_FAILED_LOGIN_FLOOR": "0",
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(tmp_path / "mail.jsonl"),
        "KEEL_LOG_LEVEL": "WARNING",
    }


def _create_admin(tmp_path: Path, backend: Backend) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": backend.database_url,
        "KEEL_STATE_FILE": str(tmp_path / "keel.sqlite3-state"),
        **backend.env,
    }
    created = subprocess.run(
        [sys.executable, "-m", "keel", "users", "create-admin", "--email", EMAIL],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr


def test_schemathesis_finds_no_failure_against_a_live_server(
    tmp_path: Path, backend: Backend
) -> None:
    database = Settings(database_url=backend.database_url).database
    asyncio.run(asyncio.to_thread(migrate.upgrade, database))
    _create_admin(tmp_path, backend)

    def serve(port: int) -> list[str]:
        # The plain `keel serve` a deployment runs (no test factory, no -X dev: fuzzing speed).
        return [sys.executable, "-m", "keel", "serve"]

    env = {**_server_env(tmp_path), **backend.env}
    with running_server(tmp_path, env=env, command=serve) as server:
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "--no-color",
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.base_url}/openapi.json",
                "--checks",
                "all",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--seed",
                str(SEED),
                "--max-examples",
                str(backend.max_examples),
                "--generation-database",
                "none",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={
                **os.environ,
                "KEEL_CONTRACT_EMAIL": EMAIL,
                "KEEL_CONTRACT_PASSWORD": PASSWORD,
            },
            timeout=600,
            check=False,
        )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20000:]
    # Not a vacuous pass: every operation was tested, authenticated, in every phase.
    assert re.search(rf"Selected: {OPERATIONS}/{OPERATIONS}\s+Tested: {OPERATIONS}\b", report), (
        report
    )
    assert "Authentication failed" not in report, report
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}\b", report), (phase, report)
    cases = re.search(r"(\d+) generated, (\d+) passed", report)
    assert cases is not None, report
    assert int(cases[1]) == int(cases[2]) > 20 * OPERATIONS, report
