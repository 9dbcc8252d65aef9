"""``keel audit ...`` as an operator runs it: exit codes and output.

The subprocess tests run ``python -m keel audit`` for real; each start pays
for an interpreter and keel's imports, so independent commands run side by
side. The rest call ``keel.cli.main`` in process with the same environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import text

import keel.cli._audit_commands
from keel.audit import Action
from keel.cli import main
from keel.db import Database
from tests.audit._support import KEY, as_superuser, fill, make_settings, rehash_lines

ROOT = Path(__file__).resolve().parents[2]

Outcome = tuple[int, list[str], str]


def _env(url: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("KEEL_") and key not in {"DATABASE_URL", "SECRET_KEY"}
    }
    env.update(DATABASE_URL=url, KEEL_AUDIT_KEY=KEY.decode(), KEEL_LOG_LEVEL="WARNING")
    return env


def _batch(url: str, *commands: Sequence[str]) -> list[Outcome]:
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "keel", "audit", *args],
            cwd=ROOT,
            env=_env(url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        outcomes.append((process.returncode, out.splitlines(), err))
    return outcomes


@pytest.mark.timeout(120)
async def test_verify_checkpoint_and_export_as_subprocesses(
    audit_url: str, audit_database: Database
) -> None:
    links = await fill(audit_database, 6)
    head = f"6:{links[-1].hash}"
    verified, broken, checkpoint = _batch(
        audit_url,
        ["verify", "--against", f"2:{links[1].hash}"],
        ["verify", "--against", f"2:{'0' * 64}"],
        ["checkpoint"],
    )
    (exported,) = _batch(audit_url, ["export", "--since", "3"])  # it appends: after the rest
    assert verified[:2] == (0, [f"OK 6 events, head {head}"]), verified[2]
    assert broken[0] == 1, broken[2]
    assert broken[1] == ["BROKEN at seq 2: checkpoint mismatch (--against names another hash)"]
    assert checkpoint[0] == 0, checkpoint[2]
    assert checkpoint[1][-1] == head  # the last line is the head, SEQ:HASH
    assert exported[0] == 0, exported[2]
    records = [json.loads(line) for line in exported[1]]
    assert [record["seq"] for record in records] == [4, 5, 6, 7]
    assert records[-1]["action"] == Action.AUDIT_EXPORTED.value  # the export records itself
    assert records[-1]["details"] == {"since_seq": 3}
    assert records[-1]["actor_id"].startswith("cli")
    assert all(rehash_lines(exported[1]))


@pytest.fixture
def cli_env(migrated_sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment ``keel audit`` reads, for in-process runs of ``keel.cli.main``."""
    for name in list(os.environ):
        if name.startswith("KEEL_") and name != "KEEL_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("DATABASE_URL", migrated_sqlite_url)
    monkeypatch.setenv("KEEL_AUDIT_KEY", KEY.decode())
    # configure_logging would replace pytest's handlers on the root logger.
    monkeypatch.setattr(keel.cli._audit_commands, "configure_logging", lambda *a, **k: None)
    return migrated_sqlite_url


def test_prune_prints_what_it_did_and_is_audited(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = Database(make_settings(cli_env))
    links = asyncio.run(fill(database, 8))
    archive = tmp_path / "pruned.jsonl"
    assert main(["audit", "prune", "--before", "4", "--archive", str(archive)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"pruned 3 events (seq 1..3) to {archive}"
    assert lines[-1] == f"3:{links[2].hash}"
    assert [json.loads(line)["seq"] for line in archive.read_text().splitlines()] == [1, 2, 3]

    async def last_event() -> tuple[str, str]:
        try:
            async with database.engine.connect() as conn:
                row = (
                    await conn.execute(
                        text("SELECT action, actor_id FROM audit_events ORDER BY seq DESC")
                    )
                ).first()
                assert row is not None
                return str(row[0]), str(row[1])
        finally:
            await database.dispose()

    action, actor = asyncio.run(last_event())
    assert action == Action.AUDIT_PRUNED.value
    assert actor.startswith("cli")
    assert main(["audit", "verify"]) == 0
    assert capsys.readouterr().out.startswith("OK 6 events, head 9:")


def test_failures_are_one_line_and_exit_one(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "exists.jsonl"
    existing.write_text("")
    asyncio.run(_fill_and_dispose(cli_env, 3))
    for args, message in [
        (["--before", "1", "--archive", str(tmp_path / "a.jsonl")], "keel: nothing to prune"),
        (["--before", "3", "--archive", str(existing)], "keel: the archive"),
        (["--before", "9", "--archive", str(tmp_path / "a.jsonl")], "keel: cannot prune"),
    ]:
        assert main(["audit", "prune", *args]) == 1
        captured = capsys.readouterr()
        assert captured.err.strip().startswith(message), captured.err
        assert len(captured.err.strip().splitlines()) == 1
    assert main(["audit", "verify", "--against", "3:" + "0" * 64]) == 1
    assert capsys.readouterr().out.startswith("BROKEN at seq 3: checkpoint mismatch")


def test_an_unmigrated_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
    cli_env: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/empty.sqlite3")
    assert main(["audit", "verify"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("keel: the audit tables could not be used")
    assert "keel db upgrade" in captured.err


def test_tampering_makes_verify_exit_one(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def tamper() -> None:
        database = Database(make_settings(cli_env))
        try:
            await fill(database, 5)
            await as_superuser(database, "UPDATE audit_events SET result = 'failure' WHERE seq = 4")
        finally:
            await database.dispose()

    asyncio.run(tamper())
    assert main(["audit", "verify"]) == 1
    assert capsys.readouterr().out == "BROKEN at seq 4: hash mismatch\n"


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--against", "twelve:abc"],
        ["verify", "--against", "12"],
        ["export", "--since", "-1"],
        ["prune", "--before", "3"],
    ],
)
def test_bad_arguments_exit_two(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["audit", *args])
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


async def _fill_and_dispose(url: str, count: int) -> None:
    database = Database(make_settings(url))
    try:
        await fill(database, count)
    finally:
        await database.dispose()


def _prune_to(archive: Path, before: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "prune", "--before", str(before), "--archive", str(archive)]) == 0
    capsys.readouterr()


def _verify_archive(archive: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["audit", "verify", "--archive", str(archive)])
    return status, capsys.readouterr().out.strip()


def test_a_prune_archive_verifies_against_the_checkpoint_that_followed_it(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_fill_and_dispose(cli_env, 8))
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    _prune_to(first, 4, capsys)
    _prune_to(second, 7, capsys)

    status, output = _verify_archive(first, capsys)
    assert status == 0, output
    assert output.startswith("OK archive of 3 events (seq 1..3), ends at prune checkpoint ")
    status, output = _verify_archive(second, capsys)
    assert status == 0, output
    assert output.startswith("OK archive of 3 events (seq 4..6), ends at prune checkpoint ")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("edit", "BROKEN at seq 2: hash mismatch"),
        ("drop_middle", "BROKEN at seq 2: gap"),
        ("drop_last", "BROKEN at seq 2: checkpoint mismatch"),
        ("drop_first", "BROKEN at seq 2: broken link"),
        ("garbage", "BROKEN at seq 0: hash mismatch (line 2:"),
    ],
)
def test_a_damaged_prune_archive_does_not_verify(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, expected: str
) -> None:
    asyncio.run(_fill_and_dispose(cli_env, 6))
    archive = tmp_path / "pruned.jsonl"
    _prune_to(archive, 4, capsys)
    lines = archive.read_text().splitlines(keepends=True)
    if damage == "edit":
        record = json.loads(lines[1])
        record["actor_id"] = "someone-else"
        lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    elif damage == "drop_middle":
        del lines[1]
    elif damage == "drop_last":
        del lines[2]
    elif damage == "drop_first":
        del lines[0]
    else:
        lines[1] = "not json\n"
    archive.write_text("".join(lines))

    status, output = _verify_archive(archive, capsys)
    assert status == 1
    assert output.startswith(expected), output
