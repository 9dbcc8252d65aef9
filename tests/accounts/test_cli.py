"""``keel users create-admin`` as an operator runs it: a real subprocess, the password on stdin."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from keel.accounts import User
from keel.audit.models import AuditEventRow
from keel.db import Database
from keel.security.hashing import PasswordHasher
from keel.settings import Settings

PASSWORD = "  an operator's passphrase, spaces kept  "


def keel(*args: str, url: str, stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _rows(settings: Settings) -> tuple[list[User], list[AuditEventRow]]:
    database = Database(settings.database)
    try:
        async with database.unit_of_work() as uow:
            users = list((await uow.session.execute(select(User))).scalars())
            events = list((await uow.session.execute(select(AuditEventRow))).scalars())
        return users, events
    finally:
        await database.dispose()


def test_create_admin_from_stdin(database_url: str, tmp_path: Path) -> None:
    assert keel("db", "upgrade", url=database_url, stdin="", cwd=tmp_path).returncode == 0
    created = keel(
        "users", "create-admin", "--email", "Admin@Keel.example",
        url=database_url, stdin=PASSWORD + "\n", cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    user_id = created.stdout.strip()
    uuid.UUID(user_id)
    assert PASSWORD not in created.stdout + created.stderr

    settings = Settings(database_url=database_url, redis_url=None)
    [user], [event] = asyncio.run(_rows(settings))
    assert str(user.id) == user_id
    assert (user.email, user.email_key) == ("Admin@keel.example", "admin@keel.example")
    assert user.role_set == {"admin", "user"}
    assert user.is_active
    assert user.email_verified_at is not None
    assert (event.action, event.actor_type, event.target_id) == ("user_created", "system", user_id)

    async def verify(password: str) -> bool:
        hasher = PasswordHasher(dataclasses.replace(settings.passwords))
        try:
            return await hasher.verify(user.password_hash, password)
        finally:
            hasher.close()

    assert asyncio.run(verify(PASSWORD))  # only the line ending was removed
    assert not asyncio.run(verify(PASSWORD.strip()))

    again = keel(
        "users", "create-admin", "--email", "admin@keel.example",
        url=database_url, stdin=PASSWORD + "\n", cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 1
    assert "email_taken" in again.stderr


def test_create_admin_refuses_bad_passwords(sqlite_url: str, tmp_path: Path) -> None:
    assert keel("db", "upgrade", url=sqlite_url, stdin="", cwd=tmp_path).returncode == 0
    for stdin, code in [
        ("\n", "password_missing"),
        ("password1234567\n", "password_blocklisted"),
        ("xq7-Vb9!zz\n", "password_too_short"),
    ]:
        result = keel(
            "users", "create-admin", "--email", "admin@keel.example",
            url=sqlite_url, stdin=stdin, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 1
        assert f"[{code}]" in result.stderr
    settings = Settings(database_url=sqlite_url, redis_url=None)
    users, _ = asyncio.run(_rows(settings))
    assert users == []


def test_create_admin_needs_a_migrated_database(sqlite_url: str, tmp_path: Path) -> None:
    result = keel(
        "users", "create-admin", "--email", "admin@keel.example",
        url=sqlite_url, stdin=PASSWORD + "\n", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "keel db upgrade" in result.stderr
    assert "Traceback" not in result.stderr


def test_create_admin_on_a_terminal_asks_twice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass

    from keel.cli import main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["first passphrase here 1", "second passphrase here 2"])
    prompts: list[str] = []

    def ask(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", ask)
    assert main(["users", "create-admin", "--email", "admin@keel.example"]) == 1
    assert len(prompts) == 2
    captured = capsys.readouterr()
    assert "[password_mismatch]" in captured.err
    assert "passphrase" not in captured.out + captured.err
