"""The ``keel`` command as a user runs it: a real subprocess with a real environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime._harness import free_port

GOOD_SECRET = "Zq3v9LmX2pT7wR4yK8nB1cF6hJ0dS5gA-uE_iO"


def keel(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KEEL_")
        and k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PORT", "WEB_CONCURRENCY"}
    }
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_version_and_help() -> None:
    result = keel("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("keel ")
    assert keel().returncode == 2  # a command is required


def test_check_passes_on_the_embedded_defaults(tmp_path: Path) -> None:
    result = keel("check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "keel.W001" in result.stdout  # no SECRET_KEY
    assert result.stdout.strip().endswith("0 error(s), 1 warning(s)")
    assert not (tmp_path / "keel.sqlite3").exists(), "check must not create the database"
    assert not (tmp_path / "var").exists(), "check must not create the development key file"


def test_check_fails_on_production_errors_and_never_prints_secrets(tmp_path: Path) -> None:
    env = {"KEEL_ENV": "production", "SECRET_KEY": "changeme-canary-secret-value-0123456789"}
    result = keel("check", env=env, cwd=tmp_path)
    assert result.returncode == 1
    for finding in ("keel.E003", "keel.E006", "keel.E013"):
        assert finding in result.stdout
    assert "hint:" in result.stdout
    assert "canary" not in result.stdout + result.stderr


def test_check_reports_invalid_values_without_echoing_them(tmp_path: Path) -> None:
    result = keel("check", env={"WEB_CONCURRENCY": "canary-workers"}, cwd=tmp_path)
    assert result.returncode == 1
    assert "keel.E000" in result.stdout
    assert "WEB_CONCURRENCY" in result.stdout
    assert "canary-workers" not in result.stdout + result.stderr
    port = keel("check", env={"PORT": "canary-port"}, cwd=tmp_path)
    assert port.returncode == 1
    assert "keel.E024" in port.stdout
    assert "hint: set PORT to a whole number from 1 to 65535, e.g. PORT=8000" in port.stdout
    assert "canary-port" not in port.stdout + port.stderr


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("environment", ["development", "production"])
@pytest.mark.parametrize("command", ["serve", "dev", "check"])
def test_a_bind_with_a_port_is_refused_before_anything_starts(
    command: str, environment: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {"KEEL_ENV": environment, "KEEL_BIND": f"127.0.0.1:{port}", "PORT": str(port)}
    result = keel(command, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "keel.E022 [error] KEEL_BIND includes a port" in output
    assert f"hint: put the port in PORT: KEEL_BIND=127.0.0.1 PORT={port}" in output
    # Nothing was started: no gunicorn or uvicorn line, no listener, no files.
    for marker in ("serving on", "server_starting", "gunicorn", "Uvicorn", "Traceback"):
        assert marker not in output
    assert not _accepts(port)
    assert list(tmp_path.iterdir()) == []


def test_blank_web_concurrency_is_unset(tmp_path: Path) -> None:
    assert keel("check", env={"WEB_CONCURRENCY": ""}, cwd=tmp_path).returncode == 0


def test_db_upgrade_current_downgrade_on_sqlite(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/keel.sqlite3"}
    before = keel("db", "current", env=env)
    assert before.returncode == 1
    assert "current: (empty)" in before.stdout
    up = keel("db", "upgrade", env=env)
    assert up.returncode == 0, up.stderr
    after = keel("db", "current", env=env)
    assert after.returncode == 0
    current = after.stdout.splitlines()[0].split()[-1]
    head = after.stdout.splitlines()[1].split()[-1]
    assert current == head
    down = keel("db", "downgrade", env=env)
    assert down.returncode == 0, down.stderr
    assert keel("db", "current", env=env).returncode == 1


def test_db_upgrade_with_the_database_down_is_one_clear_line() -> None:
    env = {"DATABASE_URL": "postgresql://keel:canary-pw@127.0.0.1:1/keel"}
    result = keel("db", "upgrade", env=env)
    assert result.returncode == 1
    assert "[database_unavailable]" in result.stderr
    assert "Traceback" not in result.stderr
    assert "canary-pw" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_production_refuses_to_start_on_errors(command: str, tmp_path: Path) -> None:
    result = keel(command, env={"KEEL_ENV": "production"}, cwd=tmp_path)
    assert result.returncode == 1
    assert "refusing to start in production" in result.stderr
    assert "keel.E001" in result.stderr


def test_dev_is_refused_in_a_sound_production_configuration(tmp_path: Path) -> None:
    env = {
        "KEEL_ENV": "production",
        "SECRET_KEY": GOOD_SECRET,
        "KEEL_AUDIT_KEY": GOOD_SECRET[::-1],
        "DATABASE_URL": "postgresql://keel@127.0.0.1:1/keel",
        "KEEL_JWT_ALGORITHM": "HS256",
        "KEEL_JWT_SECRET": "Jwt-Hm7Qx2Lp9Vr4Ks8Tn3Wb6Yc1Zd5Fg0Aj",
        "KEEL_PUBLIC_URL": "https://id.example.com",
        "KEEL_SINGLE_INSTANCE": "true",
    }
    result = keel("dev", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "`keel dev` is refused" in result.stderr


def test_db_prune_runs_one_round_and_reports_each_table(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/keel.sqlite3"}
    assert keel("db", "upgrade", env=env).returncode == 0
    result = keel("db", "prune", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "sessions: 0 deleted",
        "email_verification_tokens: 0 deleted",
        "password_reset_tokens: 0 deleted",
        "mail_outbox: 0 deleted",
    ]
    refused = keel("db", "prune", "--budget", "0", env=env)
    assert refused.returncode == 2
