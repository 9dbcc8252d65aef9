"""keel.security.hashing: argon2id, legacy bcrypt, timing parity, off-loop bounded work.

Behavioural tests use cheap argon2 parameters; only the tests about the
parameters themselves (SEC-06, SEC-07, SEC-11) pay for the OWASP ones.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Callable

import argon2
import bcrypt
import pytest

from keel.security.hashing import PasswordHasher
from keel.security.passwords import PasswordRejected
from keel.settings import PasswordSettings

OWASP = PasswordSettings(
    min_length=15,
    max_length=1024,
    service_name="keel",
    argon2_memory_kib=19456,
    argon2_time_cost=2,
    argon2_parallelism=1,
    hash_concurrency=2,
)
CHEAP = dataclasses.replace(OWASP, argon2_memory_kib=1024, argon2_time_cost=1)
PHC = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


class Probe:
    """Records, from the worker thread, each run's operation and thread."""

    def __init__(self, then: Callable[[], object] = lambda: None) -> None:
        self.runs: list[tuple[str, int, str]] = []
        self._then = then

    def __call__(self, operation: str) -> None:
        thread = threading.current_thread()
        self.runs.append((operation, thread.ident or 0, thread.name))
        self._then()

    @property
    def operations(self) -> list[str]:
        return [operation for operation, _ident, _name in self.runs]


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def hasher(probe: Probe) -> AsyncIterator[PasswordHasher]:
    hasher = PasswordHasher(CHEAP, probe=probe)
    yield hasher
    hasher.close()


@pytest.fixture
async def owasp_hasher(probe: Probe) -> AsyncIterator[PasswordHasher]:
    hasher = PasswordHasher(OWASP, probe=probe)
    yield hasher
    hasher.close()


def _bcrypt_hash(password: bytes) -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=10)).decode("ascii")


async def test_sec_02_nfd_form_verifies_against_the_nfc_hash(hasher: PasswordHasher) -> None:
    passphrase = "pässwörd 🔑 under the quiet maple, seven herons fold their wings!"
    stored = await hasher.hash(unicodedata.normalize("NFC", passphrase))
    assert await hasher.verify(stored, unicodedata.normalize("NFD", passphrase))


async def test_sec_02_megabyte_password_is_refused_before_any_hashing(
    hasher: PasswordHasher, probe: Probe
) -> None:
    huge = "a" * 1_000_000
    stored = await hasher.hash("a sound password of some length")
    probe.runs.clear()
    for attempt in (hasher.hash(huge), hasher.verify(stored, huge), hasher.dummy_verify(huge)):
        with pytest.raises(PasswordRejected) as caught:
            await attempt
        assert caught.value.code == "password_too_long"
    assert probe.runs == []
    assert hasher.hashes == 1
    assert hasher.verifications == 0


async def test_sec_05_password_is_verified_exactly_as_received(hasher: PasswordHasher) -> None:
    password = "Tq" + "x7-Lm9#pR2vZ" * 7 + "eNd4h3E6aBcD0k"
    assert len(password) == 100
    stored = await hasher.hash(password)
    assert not await hasher.verify(stored, password[:72])
    assert not await hasher.verify(stored, password[0].swapcase() + password[1:])
    assert not await hasher.verify(stored, password + " ")
    assert await hasher.verify(stored, password)


async def test_sec_05_legacy_bcrypt_hash_verifies_and_needs_rehash(hasher: PasswordHasher) -> None:
    stored = _bcrypt_hash(b"legacy password from the old system")
    assert await hasher.verify(stored, "legacy password from the old system")
    assert not await hasher.verify(stored, "Legacy password from the old system")
    assert hasher.needs_rehash(stored)


async def test_sec_05_over_72_bytes_against_bcrypt_fails_without_truncating(
    hasher: PasswordHasher, probe: Probe
) -> None:
    password = "p" * 73
    stored = _bcrypt_hash(password[:72].encode())
    assert not await hasher.verify(stored, password)  # bcrypt would match the 72-byte prefix
    # Multi-byte characters: 30 code points, 90 bytes.
    assert not await hasher.verify(stored, "ä€" * 15 + "€" * 15)
    assert probe.operations == ["verify", "verify"]  # each still cost one verification


async def test_sec_06_hash_is_argon2id_with_owasp_parameters(owasp_hasher: PasswordHasher) -> None:
    first = await owasp_hasher.hash("seven herons fold their wings")
    second = await owasp_hasher.hash("seven herons fold their wings")
    assert first != second
    for stored in (first, second):
        match = PHC.match(stored)
        assert match is not None, stored
        memory, time_cost, parallelism = map(int, match.group(1, 2, 3))
        assert (memory >= 19456 and time_cost >= 2) or (memory >= 47104 and time_cost == 1)
        assert parallelism >= 1
        salt = base64.b64decode(match.group(4) + "=" * (-len(match.group(4)) % 4))
        assert len(salt) >= 16
    assert await owasp_hasher.verify(first, "seven herons fold their wings")


async def test_sec_07_outdated_parameters_need_rehash(owasp_hasher: PasswordHasher) -> None:
    weak = argon2.PasswordHasher(memory_cost=8192, time_cost=1, parallelism=1)
    old = weak.hash("seven herons fold their wings")
    assert owasp_hasher.needs_rehash(old)
    assert await owasp_hasher.verify(old, "seven herons fold their wings")  # login still works
    current = await owasp_hasher.hash("seven herons fold their wings")
    assert not owasp_hasher.needs_rehash(current)
    argon2i = argon2.PasswordHasher(memory_cost=19456, time_cost=2, type=argon2.Type.I)
    assert owasp_hasher.needs_rehash(argon2i.hash("x"))
    assert owasp_hasher.needs_rehash("$argon2id$garbage")
    assert owasp_hasher.needs_rehash("plaintext?")


async def test_sec_11_dummy_verify_runs_one_verification_with_current_parameters(
    owasp_hasher: PasswordHasher, probe: Probe
) -> None:
    await owasp_hasher.dummy_verify("whatever the caller typed")
    assert owasp_hasher.verifications == 1
    assert probe.operations == ["verify"]
    dummy = argon2.extract_parameters(owasp_hasher.dummy_hash)
    live = argon2.extract_parameters(await owasp_hasher.hash("seven herons fold their wings"))
    assert dummy == live
    assert not owasp_hasher.needs_rehash(owasp_hasher.dummy_hash)


async def test_sec_11_every_verify_outcome_costs_exactly_one_verification(
    hasher: PasswordHasher, probe: Probe
) -> None:
    stored = await hasher.hash("seven herons fold their wings")
    legacy = _bcrypt_hash(b"seven herons fold their wings")
    probe.runs.clear()
    cases = [
        (stored, "seven herons fold their wings"),
        (stored, "wrong"),
        (legacy, "seven herons fold their wings"),
        (legacy, "x" * 100),
        ("$argon2id$damaged", "anything"),
        ("md5:unknown-format", "anything"),
    ]
    for count, (stored_hash, password) in enumerate(cases, start=1):
        await hasher.verify(stored_hash, password)
        assert hasher.verifications == count
        assert probe.operations == ["verify"] * count


async def test_hashing_never_runs_on_the_event_loop_thread(
    hasher: PasswordHasher, probe: Probe
) -> None:
    loop_thread = threading.get_ident()
    stored = await hasher.hash("seven herons fold their wings")
    await hasher.verify(stored, "seven herons fold their wings")
    await hasher.dummy_verify("anything")
    await hasher.prewarm()
    assert probe.operations == ["hash", "verify", "verify", "prewarm"]
    for _operation, ident, name in probe.runs:
        assert ident != loop_thread
        assert name.startswith("keel-hash")


async def test_concurrency_bound_keeps_runs_from_overlapping() -> None:
    active = 0
    overlaps: list[int] = []
    lock = threading.Lock()

    def slow() -> None:
        nonlocal active
        with lock:
            active += 1
            overlaps.append(active)
        time.sleep(0.02)
        with lock:
            active -= 1

    hasher = PasswordHasher(dataclasses.replace(CHEAP, hash_concurrency=1), probe=Probe(slow))
    try:
        await asyncio.gather(*(hasher.hash(f"password number {i} is long") for i in range(4)))
    finally:
        hasher.close()
    assert overlaps == [1, 1, 1, 1]
    assert hasher.peak_in_flight == 1


async def test_concurrency_instrument_sees_overlap_when_allowed() -> None:
    """Control for the test above: with two slots, two runs are under way at once."""
    both_running = threading.Barrier(2, timeout=10)
    hasher = PasswordHasher(
        dataclasses.replace(CHEAP, hash_concurrency=2), probe=Probe(both_running.wait)
    )
    try:
        await asyncio.gather(hasher.hash("first long password"), hasher.hash("second long one"))
    finally:
        hasher.close()
    assert hasher.peak_in_flight == 2


async def test_prewarm_counts_as_neither_hash_nor_verification(
    hasher: PasswordHasher, probe: Probe
) -> None:
    await hasher.prewarm()
    assert probe.operations == ["prewarm"]
    assert (hasher.hashes, hasher.verifications) == (0, 0)


async def test_closed_hasher_refuses_work(hasher: PasswordHasher) -> None:
    hasher.close()
    with pytest.raises(RuntimeError, match="closed"):
        await hasher.hash("seven herons fold their wings")
    hasher.close()  # idempotent
