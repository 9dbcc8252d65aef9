"""SEC-68: every way of tampering is reported at exactly the seq where it happened."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import text

from keel.audit import (
    AuditKeyring,
    ChainLink,
    CheckpointKind,
    ProblemKind,
    record_alone,
    take_checkpoint,
    verify,
)
from keel.audit.checkpoints import checkpoint_canonical
from keel.db import Database
from tests.audit._support import (
    INSERT_ROW,
    KEY,
    KEYRING,
    T0,
    as_superuser,
    event,
    fill,
    head,
    rows,
    sealed_row,
)

CHAIN = 30


@pytest.fixture
async def chain(audit_database: Database) -> list[ChainLink]:
    links = await fill(audit_database, CHAIN - 3)
    for n in range(CHAIN - 2, CHAIN + 1):  # the last few in transactions of their own
        links.append(await record_alone(audit_database, event(n), KEYRING))
    assert [link.seq for link in links] == list(range(1, CHAIN + 1))
    return links


async def test_sec_68_a_sound_chain_verifies(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    result = await verify(audit_database, KEYRING)
    assert result.ok
    assert result.count == CHAIN
    assert result.head == chain[-1]
    assert str(result) == f"OK {CHAIN} events, head {CHAIN}:{chain[-1].hash}"


async def test_an_empty_chain_verifies(audit_database: Database) -> None:
    result = await verify(audit_database, KEYRING)
    assert result.ok
    assert str(result) == "OK 0 events, head 0:" + "0" * 64


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor_id", "mallory"),
        ("action", "authn_login_success"),
        ("result", "failure"),
        ("details", '{"field":"role","n":7}'),
        ("details", '{"field": "display_name", "n": 7}'),  # the same JSON, other bytes
        ("source_ip", "198.51.100.1"),
        ("user_agent", None),
        ("key_id", "k2"),
        ("prev_hash", "0" * 64),
        ("hash", "f" * 64),
    ],
)
async def test_sec_68_an_updated_field_is_a_hash_mismatch_at_that_seq(
    audit_database: Database, chain: list[ChainLink], column: str, value: str | None
) -> None:
    statement = text(f"UPDATE audit_events SET {column} = :v WHERE seq = 7")  # noqa: S608  (column from the list above)
    await as_superuser(audit_database, statement, v=value)
    result = await verify(audit_database, KEYRING)
    assert not result.ok
    assert result.bad_seq == 7
    assert result.problem is not None
    expected = ProblemKind.UNKNOWN_KEY if column == "key_id" else ProblemKind.HASH_MISMATCH
    assert result.problem.kind is expected
    assert result.count == 6
    if column != "key_id":
        assert str(result) == "BROKEN at seq 7: hash mismatch"


async def test_a_rewrite_to_the_same_values_changes_nothing(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    await as_superuser(audit_database, "UPDATE audit_events SET occurred_at = occurred_at")
    assert (await verify(audit_database, KEYRING)).ok


async def test_sec_68_a_moved_timestamp_is_a_hash_mismatch(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    await as_superuser(
        audit_database, "UPDATE audit_events SET occurred_at = :at WHERE seq = 12", at=T0
    )
    result = await verify(audit_database, KEYRING)
    assert (result.bad_seq, result.problem and result.problem.kind) == (
        12,
        ProblemKind.HASH_MISMATCH,
    )


async def test_a_broken_chain_is_logged_as_an_incident(
    audit_database: Database, chain: list[ChainLink], caplog: pytest.LogCaptureFixture
) -> None:
    await as_superuser(audit_database, "DELETE FROM audit_events WHERE seq = 3")
    with caplog.at_level(logging.ERROR, logger="keel.audit"):
        await verify(audit_database, KEYRING)
    [record] = [r for r in caplog.records if r.getMessage() == "audit_chain_broken"]
    assert record.fields == {"seq": 3, "problem": "gap", "verified": 2}  # type: ignore[attr-defined]


async def test_sec_68_a_deleted_row_is_a_gap_at_its_seq(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    await as_superuser(audit_database, "DELETE FROM audit_events WHERE seq = 9")
    result = await verify(audit_database, KEYRING)
    assert result.bad_seq == 9
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.GAP
    assert str(result) == "BROKEN at seq 9: gap (missing; the next row is seq 10)"


async def test_sec_68_swapped_rows_break_at_the_lower_seq(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    await as_superuser(
        audit_database,
        "UPDATE audit_events SET seq = -1 WHERE seq = 8",
        "UPDATE audit_events SET seq = 8 WHERE seq = 15",
        "UPDATE audit_events SET seq = 15 WHERE seq = -1",
    )
    result = await verify(audit_database, KEYRING)
    assert result.bad_seq == 8
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.HASH_MISMATCH


async def test_sec_68_a_forged_row_at_the_end_is_a_hash_mismatch(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    forged = sealed_row(CHAIN + 1, chain[-1].hash, 99, keyring=_attacker())
    await as_superuser(
        audit_database,
        INSERT_ROW,
        "UPDATE audit_chain_head SET seq = :seq, hash = :hash",
        **forged,
    )
    result = await verify(audit_database, KEYRING)
    assert result.bad_seq == CHAIN + 1
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.HASH_MISMATCH
    assert result.count == CHAIN


async def test_sec_68_a_replaced_row_is_a_hash_mismatch(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    forged = sealed_row(5, chain[3].hash, 5, keyring=_attacker())
    await as_superuser(
        audit_database, "DELETE FROM audit_events WHERE seq = 5", INSERT_ROW, **forged
    )
    result = await verify(audit_database, KEYRING)
    assert (result.bad_seq, result.problem and result.problem.kind) == (
        5,
        ProblemKind.HASH_MISMATCH,
    )


async def test_a_row_sealed_with_an_unknown_key_is_reported(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    stranger = AuditKeyring(current_id="k9", keys={"k9": b"s" * 32})
    forged = sealed_row(CHAIN + 1, chain[-1].hash, 99, keyring=stranger)
    await as_superuser(audit_database, INSERT_ROW, **forged)
    result = await verify(audit_database, KEYRING)
    assert result.bad_seq == CHAIN + 1
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.UNKNOWN_KEY
    assert str(result) == f"BROKEN at seq {CHAIN + 1}: unknown key id ('k9')"


async def test_a_fork_is_reported_with_the_row_it_points_at(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    # A second row sealed (with the real key) on top of seq 29 instead of 30: what two
    # writers appending without the chain lock would produce.
    fork = sealed_row(CHAIN + 1, chain[CHAIN - 2].hash, 99)
    await as_superuser(
        audit_database, INSERT_ROW, "UPDATE audit_chain_head SET seq = :seq, hash = :hash", **fork
    )
    result = await verify(audit_database, KEYRING)
    assert result.bad_seq == CHAIN + 1
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.FORK
    assert f"hash of seq {CHAIN - 1}, not of seq {CHAIN}" in str(result)


async def test_a_broken_link_is_reported(audit_database: Database, chain: list[ChainLink]) -> None:
    broken = sealed_row(CHAIN + 1, "ab" * 32, 99)
    await as_superuser(
        audit_database, INSERT_ROW, "UPDATE audit_chain_head SET seq = :seq, hash = :hash", **broken
    )
    result = await verify(audit_database, KEYRING)
    assert result.bad_seq == CHAIN + 1
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.BROKEN_LINK


async def test_sec_68_deleting_the_newest_rows_is_caught_against_a_checkpoint(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    kept_outside = chain[-1]
    survivor = chain[CHAIN - 6]
    # Delete the newest rows, and rewind the chain head so the chain looks whole.
    await as_superuser(
        audit_database,
        "DELETE FROM audit_events WHERE seq > :seq",
        "UPDATE audit_chain_head SET seq = :seq, hash = :hash",
        seq=survivor.seq,
        hash=survivor.hash,
    )
    plain = await verify(audit_database, KEYRING)
    assert plain.ok  # nothing inside the database can tell...
    assert plain.head == survivor
    against = await verify(audit_database, KEYRING, against=kept_outside)
    assert not against.ok  # ...but the head kept elsewhere can
    assert against.bad_seq == survivor.seq + 1
    assert against.problem is not None
    assert against.problem.kind is ProblemKind.TRUNCATED
    assert f"--against names seq {CHAIN}" in str(against)


async def test_deleting_the_newest_rows_without_rewinding_the_head_is_caught(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    await as_superuser(audit_database, "DELETE FROM audit_events WHERE seq > :seq", seq=CHAIN - 3)
    result = await verify(audit_database, KEYRING)
    assert result.bad_seq == CHAIN - 2
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.TRUNCATED


async def test_rows_past_the_chain_head_are_reported(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    await as_superuser(
        audit_database,
        "UPDATE audit_chain_head SET seq = :seq, hash = :hash",
        seq=chain[-3].seq,
        hash=chain[-3].hash,
    )
    result = await verify(audit_database, KEYRING)
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.HEAD_MISMATCH
    assert result.bad_seq == CHAIN - 1


async def test_against_the_current_head_or_an_older_row_passes(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    assert (await verify(audit_database, KEYRING, against=chain[-1])).ok
    assert (await verify(audit_database, KEYRING, against=(chain[9].seq, chain[9].hash))).ok
    assert (await verify(audit_database, KEYRING, against=ChainLink(0, "0" * 64))).ok


async def test_against_a_different_hash_fails_at_its_seq(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    result = await verify(audit_database, KEYRING, against=ChainLink(10, "cd" * 32))
    assert result.bad_seq == 10
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.CHECKPOINT_MISMATCH


async def test_a_stored_checkpoint_pins_the_chain_too(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    checkpoint = await take_checkpoint(audit_database, KEYRING, clock=_Clock())
    assert checkpoint.link == chain[-1]
    assert checkpoint.kind == CheckpointKind.MANUAL
    await as_superuser(audit_database, "DELETE FROM audit_events WHERE seq > :seq", seq=CHAIN - 4)
    result = await verify(audit_database, KEYRING)
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.TRUNCATED
    assert result.bad_seq == CHAIN - 3


async def test_a_forged_checkpoint_is_reported(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    forged_id = uuid.uuid4()
    link = chain[19]
    seal = _attacker().seal(checkpoint_canonical(forged_id, link, CheckpointKind.PRUNE, T0, "k1"))
    await as_superuser(
        audit_database,
        "INSERT INTO audit_checkpoints (id, seq, hash, kind, created_at, key_id, seal) "
        "VALUES (:id, :seq, :hash, 'prune', :created_at, 'k1', :seal)",
        id=forged_id if audit_database.dialect == "postgresql" else forged_id.hex,
        seq=link.seq,
        hash=link.hash,
        created_at=T0,
        seal=seal,
    )
    result = await verify(audit_database, KEYRING)
    assert result.bad_seq == 20
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.FORGED_CHECKPOINT
    assert "seal mismatch" in str(result)


async def test_an_edited_checkpoint_is_reported(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    await take_checkpoint(audit_database, KEYRING, clock=_Clock())
    await as_superuser(
        audit_database, "UPDATE audit_checkpoints SET seq = 12, hash = :h", h=chain[11].hash
    )
    result = await verify(audit_database, KEYRING)
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.FORGED_CHECKPOINT
    assert result.bad_seq == 12


async def test_rotated_keys_verify_and_a_dropped_key_is_reported(audit_database: Database) -> None:
    await fill(audit_database, 3)
    rotated = AuditKeyring(current_id="k2", keys={"k1": KEY, "k2": b"second-key-" * 4})
    await record_alone(audit_database, event(4), rotated)
    stored = await rows(audit_database)
    assert [r["key_id"] for r in stored] == ["k1", "k1", "k1", "k2"]
    assert (await verify(audit_database, rotated)).ok
    without_old = AuditKeyring(current_id="k2", keys={"k2": b"second-key-" * 4})
    result = await verify(audit_database, without_old)
    assert result.bad_seq == 1
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.UNKNOWN_KEY


async def test_verification_streams_in_chunks(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    # Chunks smaller than the chain, including ranges cut right at a tampered row.
    for size in (1, 7, 29, 30):
        assert (await verify(audit_database, KEYRING, chunk_size=size)).count == CHAIN
    await as_superuser(audit_database, "DELETE FROM audit_events WHERE seq BETWEEN 8 AND 21")
    for size in (1, 7, 14, 100):
        result = await verify(audit_database, KEYRING, chunk_size=size)
        assert result.bad_seq == 8, size
    assert await head(audit_database) == chain[-1]


async def test_a_wrong_key_breaks_at_the_first_row(
    audit_database: Database, chain: list[ChainLink]
) -> None:
    result = await verify(audit_database, _attacker())
    assert result.bad_seq == 1
    assert result.problem is not None
    assert result.problem.kind is ProblemKind.HASH_MISMATCH


async def test_sql_is_never_needed_to_read_the_verdict(audit_database: Database) -> None:
    # The verdict reads the same from a fresh connection pool: nothing cached in process.
    await fill(audit_database, 3)
    await audit_database.dispose()
    async with audit_database.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar() == 3
    assert (await verify(audit_database, KEYRING)).count == 3


def _attacker() -> AuditKeyring:
    return AuditKeyring(current_id="k1", keys={"k1": b"not-the-real-audit-key-000000000"})


class _Clock:
    def now(self):  # type: ignore[no-untyped-def]
        return T0

    def monotonic(self) -> float:
        return 0.0
