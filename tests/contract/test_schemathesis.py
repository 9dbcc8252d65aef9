"""schemathesis against a live keel: every check, every phase, no failure.

A real ``keel serve`` (two workers, SQLite, the machine's state file) on a free
loopback port, with an admin made by ``keel users create-admin``: schemathesis
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
from pathlib import Path

import pytest

from keel.db import migrate
from keel.settings import Settings
from tests.runtime._harness import REPO_ROOT, running_server

CONFIG = Path(__file__).with_name("schemathesis.toml")
EMAIL = "contract-admin@keel.example"
PASSWORD = "lantern quietly under the orchard 7"
SEED = 20261207
MAX_EXAMPLES = 150
OPERATIONS = 19

pytestmark = pytest.mark.runtime


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


def _create_admin(tmp_path: Path, database_url: str) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": database_url,
        "KEEL_STATE_FILE": str(tmp_path / "keel.sqlite3-state"),
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


def test_schemathesis_finds_no_failure_against_a_live_server(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'keel.sqlite3'}"
    asyncio.run(asyncio.to_thread(migrate.upgrade, Settings(database_url=database_url).database))
    _create_admin(tmp_path, database_url)

    def serve(port: int) -> list[str]:
        # The plain `keel serve` a deployment runs (no test factory, no -X dev: fuzzing speed).
        return [sys.executable, "-m", "keel", "serve"]

    with running_server(tmp_path, env=_server_env(tmp_path), command=serve) as server:
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
                str(MAX_EXAMPLES),
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
