"""``keel keys ...`` as a user runs them: real subprocesses in a temp dir.

``rotate``, ``promote`` and ``revoke`` are audited, so they run against a
migrated database (SQLite, and PostgreSQL where it says so).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from keel.audit import Action
from keel.db import Database, migrate
from keel.security.keys import load_key_file
from keel.settings import Settings

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}
AUDIT_KEY = "test-audit-key-0123456789abcdef-k1"


def keel(
    *args: str, cwd: Path, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.pop("DATABASE_URL", None)
    if database_url is not None:
        env.update(DATABASE_URL=database_url, KEEL_AUDIT_KEY=AUDIT_KEY, KEEL_LOG_LEVEL="WARNING")
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _show(path: Path) -> dict[str, list[dict[str, str]]]:
    result = keel("keys", "show", "--file", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stderr
    jwks: dict[str, list[dict[str, str]]] = json.loads(result.stdout)
    return jwks


def _kids(path: Path) -> list[str]:
    return [jwk["kid"] for jwk in _show(path)["keys"]]


def _migrated(url: str) -> str:
    migrate.upgrade(Settings(database_url=url, redis_url=None).database)
    return url


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return _migrated(f"sqlite:///{tmp_path / 'keel.sqlite3'}")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return _migrated(f"sqlite:///{tmp_path / 'keel.sqlite3'}")
    url: str = request.getfixturevalue("postgres_url")
    return _migrated(url)


async def _key_events(url: str) -> list[tuple[str, str, str]]:
    database = Database(Settings(database_url=url, redis_url=None).database)
    try:
        async with database.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT action, target_id, actor_id FROM audit_events "
                    "WHERE action LIKE 'key_%' ORDER BY seq"
                )
            )
            return [(str(a), str(t), str(actor)) for a, t, actor in rows]
    finally:
        await database.dispose()


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_generate_rotate_promote_show(tmp_path: Path, sqlite_db: str, algorithm: str) -> None:
    path = tmp_path / "jwt-keys.json"
    generated = keel(
        "keys", "generate", "--file", path.name, "--algorithm", algorithm, cwd=tmp_path
    )
    assert generated.returncode == 0, generated.stderr
    first_kid = generated.stdout.strip()
    assert _mode(path) == 0o600
    private = json.loads(path.read_text())
    assert private["current"]["kid"] == first_kid
    secret_part = private["current"]["d"]

    shown = _show(path)
    assert [jwk["kid"] for jwk in shown["keys"]] == [first_kid]
    assert shown["keys"][0]["alg"] == algorithm

    rotated = keel("keys", "rotate", "--file", path.name, cwd=tmp_path, database_url=sqlite_db)
    assert rotated.returncode == 0, rotated.stderr
    action, second_kid = rotated.stdout.split()
    assert action == "key_staged"
    assert second_kid != first_kid
    assert _mode(path) == 0o600
    assert _kids(path) == [first_kid, second_kid], "the staged key is published, not signing"
    assert load_key_file(path).current.kid == first_kid

    too_soon = keel("keys", "promote", "--file", path.name, cwd=tmp_path, database_url=sqlite_db)
    assert too_soon.returncode == 1
    assert too_soon.stderr.endswith("[key_not_published_long_enough]\n"), too_soon.stderr
    assert too_soon.stderr.count("\n") == 1
    assert load_key_file(path).current.kid == first_kid

    forced = keel(
        "keys", "promote", "--file", path.name, "--force", cwd=tmp_path, database_url=sqlite_db
    )
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines() == [f"key_promoted {second_kid}", f"key_retired {first_kid}"]
    assert _kids(path) == [second_kid, first_kid]
    assert load_key_file(path).current.kid == second_kid

    emergency = keel(
        "keys", "rotate", "--emergency", "--file", path.name, cwd=tmp_path, database_url=sqlite_db
    )
    assert emergency.returncode == 0, emergency.stderr
    third_kid = emergency.stdout.splitlines()[0].split()[1]
    shown = _show(path)
    assert [jwk["kid"] for jwk in shown["keys"]] == [third_kid]
    for jwk in shown["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk)
    assert secret_part not in json.dumps(shown)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "keel.sqlite3"])


def test_rotation_promotion_retirement_and_dropping_are_audited(
    tmp_path: Path, database_url: str
) -> None:
    path = tmp_path / "keys.json"
    first = keel("keys", "generate", "--file", path.name, cwd=tmp_path).stdout.strip()

    def run(*args: str) -> list[str]:
        result = keel("keys", *args, "--file", path.name, cwd=tmp_path, database_url=database_url)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    second = run("rotate")[1]
    run("promote", "--force")
    third = run("rotate")[1]
    assert run("revoke", third) == ["key_dropped", third]
    run("revoke", first)
    fourth = run("rotate", "--emergency")[1]
    events = asyncio.run(_key_events(database_url))
    assert [(action, kid) for action, kid, _ in events] == [
        (Action.KEY_STAGED, second),
        (Action.KEY_PROMOTED, second),
        (Action.KEY_RETIRED, first),
        (Action.KEY_STAGED, third),
        (Action.KEY_DROPPED, third),
        (Action.KEY_DROPPED, first),
        (Action.KEY_PROMOTED, fourth),
        (Action.KEY_DROPPED, second),
    ]
    assert all(actor.startswith("cli") for _, _, actor in events)
    verified = subprocess.run(
        [sys.executable, "-m", "keel", "audit", "verify"],
        env={**os.environ, "DATABASE_URL": database_url, "KEEL_AUDIT_KEY": AUDIT_KEY},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_step_the_audit_trail_cannot_record_leaves_the_key_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    assert keel("keys", "generate", "--file", path.name, cwd=tmp_path).returncode == 0
    before = path.read_bytes()
    unmigrated = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    result = keel("keys", "rotate", "--file", path.name, cwd=tmp_path, database_url=unmigrated)
    assert result.returncode == 1
    assert "[database_error]" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_bytes() == before


def test_refused_steps_name_a_stable_code_and_change_nothing(
    tmp_path: Path, sqlite_db: str
) -> None:
    path = tmp_path / "keys.json"
    current = keel("keys", "generate", "--file", path.name, cwd=tmp_path).stdout.strip()
    before = path.read_bytes()
    for args, code in [
        (("promote",), "no_staged_key"),
        (("revoke", current), "key_is_current"),
        (("revoke", "no-such-kid"), "unknown_key"),
    ]:
        result = keel("keys", *args, "--file", path.name, cwd=tmp_path, database_url=sqlite_db)
        assert result.returncode == 1
        assert result.stderr.endswith(f"[{code}]\n"), result.stderr
        assert path.read_bytes() == before
    assert (
        keel("keys", "rotate", "--file", path.name, cwd=tmp_path, database_url=sqlite_db).returncode
        == 0
    )
    again = keel("keys", "rotate", "--file", path.name, cwd=tmp_path, database_url=sqlite_db)
    assert again.stderr.endswith("[key_already_staged]\n"), again.stderr
    assert asyncio.run(_key_events(sqlite_db))[0][0] == Action.KEY_STAGED
    assert len(asyncio.run(_key_events(sqlite_db))) == 1


def test_generate_defaults_to_eddsa_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    assert keel("keys", "generate", "--file", str(path), cwd=tmp_path).returncode == 0
    before = path.read_bytes()
    assert _show(path)["keys"][0]["crv"] == "Ed25519"
    again = keel("keys", "generate", "--file", str(path), cwd=tmp_path)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    assert path.read_bytes() == before


def test_show_and_rotate_fail_in_one_line_on_a_missing_or_bad_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"current": {"kty": "oct", "k": "c2hvcnQ"}}')
    for name in ("absent.json", "bad.json"):
        for action in ("show", "rotate", "promote"):
            result = keel("keys", action, "--file", name, cwd=tmp_path)
            assert result.returncode == 1
            assert result.stderr.count("\n") == 1, result.stderr
            assert "[configuration_error]" in result.stderr
            assert "c2hvcnQ" not in result.stderr


def test_hs256_key_files_publish_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    result = keel("keys", "generate", "--file", path.name, "--algorithm", "HS256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _show(path) == {"keys": []}


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert keel("keys", cwd=tmp_path).returncode == 2
    assert keel("keys", "generate", cwd=tmp_path).returncode == 2
    assert (
        keel("keys", "generate", "--file", "k", "--algorithm", "RS256", cwd=tmp_path).returncode
        == 2
    )
    assert not (tmp_path / "k").exists()
