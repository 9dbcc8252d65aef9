"""Retention: an audited prune archives a prefix, leaves a sealed checkpoint, and still verifies."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from keel.audit import (
    Action,
    AuditChainBroken,
    ChainLink,
    CheckpointKind,
    ProblemKind,
    export_events,
    prune,
    record_alone,
    verify,
)
from keel.audit import retention as retention_module
from keel.audit.checkpoints import checkpoint_canonical
from keel.db import Database
from keel.errors import InvalidInput
from tests.audit._support import (
    KEYRING,
    T0,
    as_superuser,
    event,
    fill,
    head,
    rehash_lines,
    rows,
)


class _Clock:
    def now(self):  # type: ignore[no-untyped-def]
        return T0

    def monotonic(self) -> float:
        return 0.0


@pytest.fixture
async def chain(audit_database: Database) -> list[ChainLink]:
    return await fill(audit_database, 30)


@pytest.fixture
def archives(tmp_path: Path) -> Path:
    """A directory of its own (the SQLite database lives in ``tmp_path``)."""
    path = tmp_path / "archives"
    path.mkdir()
    return path


async def test_prune_archives_deletes_checkpoints_and_audits(
    audit_database: Database, chain: list[ChainLink], archives: Path
) -> None:
    archive = archives / "audit-0001-0010.jsonl"
    result = await prune(
        audit_database,
        KEYRING,
        before_seq=11,
        archive_path=archive,
        clock=_Clock(),
        actor_id="cli:ops",
    )
    assert (result.count, result.first_seq) == (10, 1)
    assert result.checkpoint.link == chain[9]
    assert result.checkpoint.kind == CheckpointKind.PRUNE
    assert result.event.seq == 31

    lines = _lines(archive)
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 11))
    assert all(rehash_lines(lines))  # the archive re-verifies with the key alone
    assert json.loads(lines[-1])["hash"] == chain[9].hash

    stored = await rows(audit_database)
    assert [row["seq"] for row in stored] == list(range(11, 32))
    pruned = stored[-1]
    assert pruned["action"] == Action.AUDIT_PRUNED.value
    assert pruned["actor_id"] == "cli:ops"
    details = json.loads(pruned["details"])
    assert details["count"] == 10
    assert (details["first_seq"], details["last_seq"]) == (1, 10)
    assert details["archive"] == archive.name

    result_after = await verify(audit_database, KEYRING)
    assert result_after.ok, str(result_after)
    assert result_after.start == chain[9]
    assert result_after.count == 21
    assert result_after.head == await head(audit_database)


async def test_prune_twice_and_keep_appending(
    audit_database: Database, chain: list[ChainLink], archives: Path
) -> None:
    await prune(audit_database, KEYRING, before_seq=6, archive_path=archives / "a.jsonl")
    await record_alone(audit_database, event(99), KEYRING)
    second = await prune(audit_database, KEYRING, before_seq=21, archive_path=archives / "b.jsonl")
    assert (second.first_seq, second.count) == (6, 15)
    result = await verify(audit_database, KEYRING)
    assert result.ok, str(result)
    assert result.start == chain[19]
    exported = [record.seq async for record in export_events(audit_database)]
    assert exported == list(range(21, 34))


async def test_prune_refuses_requests_that_make_no_sense(
    audit_database: Database, chain: list[ChainLink], archives: Path
) -> None:
    with pytest.raises(InvalidInput, match="nothing to prune"):
        await prune(audit_database, KEYRING, before_seq=1, archive_path=archives / "a.jsonl")
    with pytest.raises(InvalidInput, match="head is seq 30"):
        await prune(audit_database, KEYRING, before_seq=32, archive_path=archives / "a.jsonl")
    existing = archives / "exists.jsonl"
    _write(existing, "keep me\n")
    with pytest.raises(FileExistsError):
        await prune(audit_database, KEYRING, before_seq=5, archive_path=existing)
    assert _lines(existing) == ["keep me"]
    assert _names(archives) == ["exists.jsonl"]
    assert len(await rows(audit_database)) == 30


async def test_prune_refuses_a_prefix_that_does_not_verify(
    audit_database: Database, chain: list[ChainLink], archives: Path
) -> None:
    await as_superuser(audit_database, "UPDATE audit_events SET actor_id = 'x' WHERE seq = 4")
    with pytest.raises(AuditChainBroken) as caught:
        await prune(audit_database, KEYRING, before_seq=11, archive_path=archives / "a.jsonl")
    assert caught.value.problem.seq == 4
    assert caught.value.problem.kind is ProblemKind.HASH_MISMATCH
    assert len(await rows(audit_database)) == 30  # the evidence is kept
    assert _names(archives) == []


async def test_a_failed_prune_rolls_back_and_removes_its_archive(
    audit_database: Database,
    chain: list[ChainLink],
    archives: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def fail(*_: object) -> ChainLink:
        raise RuntimeError("the audit event could not be written")

    monkeypatch.setattr(retention_module, "record", fail)
    with pytest.raises(RuntimeError, match="could not be written"):
        await prune(audit_database, KEYRING, before_seq=11, archive_path=archives / "a.jsonl")
    assert _names(archives) == []
    assert len(await rows(audit_database)) == 30
    assert (await verify(audit_database, KEYRING)).count == 30


async def test_after_pruning_a_forged_checkpoint_is_rejected(
    audit_database: Database, chain: list[ChainLink], archives: Path
) -> None:
    await prune(audit_database, KEYRING, before_seq=11, archive_path=archives / "a.jsonl")
    # Hide rows 11..15 behind a "prune checkpoint" at 15, without the key.
    forged_id = uuid.uuid4()
    link = chain[14]
    attacker = type(KEYRING)(current_id="k1", keys={"k1": b"guessed-key-guessed-key-guessed!"})
    seal = attacker.seal(checkpoint_canonical(forged_id, link, CheckpointKind.PRUNE, T0, "k1"))
    await as_superuser(
        audit_database,
        "DELETE FROM audit_events WHERE seq <= 15",
        "INSERT INTO audit_checkpoints (id, seq, hash, kind, created_at, key_id, seal) "
        "VALUES (:id, :seq, :hash, 'prune', :created_at, 'k1', :seal)",
        id=forged_id if audit_database.dialect == "postgresql" else forged_id.hex,
        seq=link.seq,
        hash=link.hash,
        created_at=T0,
        seal=seal,
    )
    result = await verify(audit_database, KEYRING)
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.FORGED_CHECKPOINT
    assert result.bad_seq == 15
    with pytest.raises(AuditChainBroken):
        await prune(audit_database, KEYRING, before_seq=20, archive_path=archives / "b.jsonl")


async def test_a_prefix_deleted_without_a_checkpoint_is_a_gap(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    await as_superuser(audit_database, "DELETE FROM audit_events WHERE seq <= 5")
    result = await verify(audit_database, KEYRING)
    assert result.bad_seq == 1
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.GAP


async def test_rows_reinserted_into_the_pruned_range_are_reported(
    audit_database: Database, chain: list[ChainLink], archives: Path
) -> None:
    archive = archives / "a.jsonl"
    await prune(audit_database, KEYRING, before_seq=11, archive_path=archive)
    first = json.loads(_lines(archive)[2])
    await as_superuser(
        audit_database,
        "INSERT INTO audit_events (seq, occurred_at, action, result, actor_type, details, "
        "key_id, prev_hash, hash) VALUES (3, :at, 'user_created', 'success', 'user', '{}', "
        "'k1', :prev, :hash)",
        at=T0,
        prev=first["prev_hash"],
        hash=first["hash"],
    )
    result = await verify(audit_database, KEYRING)
    assert result.bad_seq == 3
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.PRUNED_RANGE


async def test_against_a_pruned_head_is_not_provable(
    audit_database: Database, chain: list[ChainLink], archives: Path
) -> None:
    await prune(audit_database, KEYRING, before_seq=11, archive_path=archives / "a.jsonl")
    assert (await verify(audit_database, KEYRING, against=chain[9])).ok  # the checkpoint itself
    assert (await verify(audit_database, KEYRING, against=chain[20])).ok
    old = await verify(audit_database, KEYRING, against=chain[4])
    assert old.problem is not None
    assert old.problem.kind is ProblemKind.TRUNCATED
    assert old.bad_seq == 5


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="ascii").splitlines()


def _write(path: Path, content: str) -> None:
    path.write_text(content, encoding="ascii")


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())
