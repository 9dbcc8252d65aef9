"""keel.security.passwords: the NIST 800-63B-4 policy (SEC-01..SEC-05) and the shipped blocklist."""

from __future__ import annotations

import dataclasses
import importlib.resources
import secrets
import string
import struct
import subprocess
import sys
import textwrap
import unicodedata
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.errors import ConfigurationError, InvalidInput
from keel.security.passwords import (
    BLOCKLIST_FILE,
    Blocklist,
    PasswordPolicy,
    PasswordRejected,
    RejectionCode,
    encode_blocklist,
    hash_input,
    normalise,
)
from keel.settings import PasswordSettings

SETTINGS = PasswordSettings(
    min_length=15,
    max_length=1024,
    service_name="keel",
    argon2_memory_kib=19456,
    argon2_time_cost=2,
    argon2_parallelism=1,
    hash_concurrency=2,
)
# Context words that are on no password list, so the context rule is tested on its own.
UNLISTED_SERVICE = "zorbulex"
UNLISTED_EMAIL = "qwyzzle.frobnitz@example.com"


TINY_POLICY = PasswordPolicy(SETTINGS, blocklist=Blocklist(encode_blocklist(["pw"], bucket_bits=8)))


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _code(policy: PasswordPolicy, password: str, *context: str) -> str:
    with pytest.raises(PasswordRejected) as caught:
        policy.check(password, context=context)
    return caught.value.code


@pytest.fixture
def policy() -> PasswordPolicy:
    return PasswordPolicy(SETTINGS)


def test_sec_01_fourteen_random_characters_are_too_short(policy: PasswordPolicy) -> None:
    password = _random(string.ascii_letters + string.digits, 14)
    assert password not in policy.blocklist
    assert _code(policy, password) == "password_too_short"


def test_sec_01_fifteen_random_characters_are_enough(policy: PasswordPolicy) -> None:
    policy.check(_random(string.ascii_letters + string.digits, 15))


def test_sec_01_minimum_never_drops_below_eight() -> None:
    policy = PasswordPolicy(dataclasses.replace(SETTINGS, min_length=4))
    assert policy.min_length == 8
    assert _code(policy, "Zq8#vW1") == "password_too_short"
    policy.check("Zq8#vW1x")


def test_sec_02_long_passphrase_with_spaces_and_unicode_is_accepted(policy: PasswordPolicy) -> None:
    passphrase = "pässwörd 🔑 under the quiet maple, seven herons fold their wings!"
    assert len(normalise(passphrase)) == 64
    policy.check(passphrase)
    policy.check(unicodedata.normalize("NFD", passphrase))


def test_sec_02_length_is_counted_in_code_points_after_nfkc(policy: PasswordPolicy) -> None:
    policy.check("🔑" * 15)  # 15 code points, 60 UTF-8 bytes
    assert _code(policy, "🔑" * 14) == "password_too_short"
    # NFD spells "ä" with two code points; NFKC composes it back to one.
    assert _code(policy, unicodedata.normalize("NFD", "ä" * 14)) == "password_too_short"
    # "ﬁ" (one code point) is "fi" (two) under NFKC.
    policy.check("ﬁ" * 8)


def test_sec_02_maximum_is_inclusive(policy: PasswordPolicy) -> None:
    policy.check(_random(string.ascii_letters, 1024))
    assert _code(policy, _random(string.ascii_letters, 1025)) == "password_too_long"


def test_sec_02_megabyte_password_is_too_long(policy: PasswordPolicy) -> None:
    assert _code(policy, "a" * 1_000_000) == "password_too_long"
    assert _code(policy, "ä" * 300_000) == "password_too_long"
    with pytest.raises(PasswordRejected, match="at most 1024") as caught:
        hash_input("a" * 1_000_000, max_length=1024)
    assert caught.value.code == "password_too_long"


def test_sec_02_every_printable_and_unicode_character_is_accepted(policy: PasswordPolicy) -> None:
    policy.check(string.printable + " Ωμέγα 漢字 🙂 \u200d")
    policy.check("tab\tseparated words\tare fine")


@pytest.mark.parametrize("bad", ["\x00", chr(0xD800), chr(0xDFFF)], ids=["nul", "high", "low"])
def test_sec_02_nul_and_unpaired_surrogates_are_refused(policy: PasswordPolicy, bad: str) -> None:
    password = f"a long enough password {bad} here"
    assert _code(policy, password) == "password_invalid_characters"
    with pytest.raises(PasswordRejected):
        hash_input(password, max_length=1024)


def test_sec_02_nfc_and_nfd_forms_normalise_alike() -> None:
    nfc = unicodedata.normalize("NFC", "pässwörd 🔑")
    nfd = unicodedata.normalize("NFD", "pässwörd 🔑")
    assert nfc != nfd
    assert normalise(nfc) == normalise(nfd)
    assert hash_input(nfc, max_length=64) == hash_input(nfd, max_length=64) == nfc.encode()


def test_sec_03_random_lowercase_letters_are_accepted(policy: PasswordPolicy) -> None:
    policy.check(_random(string.ascii_lowercase, 16))


def test_sec_03_no_composition_rules(policy: PasswordPolicy) -> None:
    for password in ("aaaaaaaaabbbbbbbbbcccccc", "947305128843610297", "------=======++++++"):
        assert password not in policy.blocklist
        policy.check(password)


@pytest.mark.parametrize(
    ("password", "context"),
    [
        ("password1234567", ()),
        ("PASSWORD1234567", ()),
        ("Password!2026-2027", ()),
        ("i love you 2026!!!!!!", ()),
        ("keel2026!!!!", ()),
        ("Keel-Keel-2026-!!!", ()),
        ("alice.wonderland123456789", ("alice.wonderland@example.com",)),
    ],
)
def test_sec_04_common_passwords_are_blocklisted(
    policy: PasswordPolicy, password: str, context: tuple[str, ...]
) -> None:
    assert _code(policy, password, *context) == "password_blocklisted"


@pytest.mark.parametrize(
    ("password", "context"),
    [
        (f"{UNLISTED_SERVICE}2026!!!!", ()),
        (f"{UNLISTED_SERVICE.upper()} 2026 !!!!", ()),
        ("qwyzzle.frobnitz123456789", (UNLISTED_EMAIL,)),
        ("Frobnitz123456789!", (UNLISTED_EMAIL,)),
        ("123456789qwyzzlefrobnitz", (UNLISTED_EMAIL,)),
        (UNLISTED_EMAIL, (UNLISTED_EMAIL,)),
        ("vantablack--2026--!!!", ("Grizelda Vantablack",)),
        ("frobnitzpassword1", (UNLISTED_EMAIL,)),  # a context word plus a common password
    ],
)
def test_sec_04_passwords_built_from_context_words_are_blocklisted(
    password: str, context: tuple[str, ...]
) -> None:
    policy = PasswordPolicy(dataclasses.replace(SETTINGS, service_name=UNLISTED_SERVICE))
    assert password not in policy.blocklist
    assert _code(policy, password, *context) == "password_blocklisted"


def test_sec_04_passphrase_that_merely_contains_a_context_word_is_accepted() -> None:
    policy = PasswordPolicy(dataclasses.replace(SETTINGS, service_name=UNLISTED_SERVICE))
    policy.check("my zorbulex deploys at dawn with seven herons", context=[UNLISTED_EMAIL])
    policy.check("frobnitz keeps a violet kayak in the attic", context=[UNLISTED_EMAIL])


def test_sec_04_rejection_reason_never_contains_the_password_or_context() -> None:
    policy = PasswordPolicy(dataclasses.replace(SETTINGS, service_name=UNLISTED_SERVICE))
    for password in ("password1234567", "qwyzzle.frobnitz123456789", "short", "x" * 2000):
        with pytest.raises(PasswordRejected) as caught:
            policy.check(password, context=[UNLISTED_EMAIL])
        assert password not in caught.value.message
        assert "qwyzzle" not in caught.value.message
        assert isinstance(caught.value, InvalidInput)


def test_sec_04_shipped_blocklist_holds_well_known_entries_case_insensitively() -> None:
    blocklist = Blocklist.shipped()
    for entry in ("password", "123456", "qwerty", "iloveyou", "trustno1", "letmein", "12345678"):
        assert entry in blocklist
        assert entry.upper() in blocklist
        assert entry.capitalize() in blocklist
    assert "PassWord" in blocklist
    assert secrets.token_urlsafe(12) not in blocklist
    assert "correct horse battery staple" not in blocklist


def test_sec_04_shipped_file_header_counts_at_least_20k_entries() -> None:
    data = importlib.resources.files("keel.security").joinpath("data", BLOCKLIST_FILE).read_bytes()
    magic, entries, bucket_bits = struct.unpack_from("<8sIB", data)
    assert magic == b"KEELPWB\x01"
    assert entries >= 20_000
    assert len(data) == 16 + 4 * ((1 << bucket_bits) + 1) + 4 * entries
    assert len(data) < 2_000_000
    assert len(Blocklist.shipped()) == entries


def test_shipped_blocklist_is_read_on_first_use_not_at_import() -> None:
    script = textwrap.dedent(
        """
        import keel.security
        from keel.security import passwords
        from keel.settings import PasswordSettings
        assert passwords._shipped.cache_info().currsize == 0, "read at import"
        policy = passwords.PasswordPolicy(PasswordSettings(15, 1024, "keel", 19456, 2, 1, 2))
        assert passwords._shipped.cache_info().currsize == 0, "read at construction"
        policy.check("seven herons fold their wings")
        assert passwords._shipped.cache_info().currsize == 1
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_blocklist_round_trip_collapses_case_and_normalisation_duplicates() -> None:
    blocklist = Blocklist.from_entries(["Hunter2", "hunter2", "HUNTER2", "pässwörd", "Straße"])
    assert len(blocklist) == 3
    assert "hunter2" in blocklist
    assert unicodedata.normalize("NFD", "PÄSSWÖRD") in blocklist
    assert "STRASSE" in blocklist  # case folding maps ß to ss
    assert "hunter3" not in blocklist
    assert 42 not in blocklist


def test_blocklist_limit_keeps_the_most_common_first() -> None:
    blocklist = Blocklist(encode_blocklist(["first", "FIRST", "second", "third"], limit=2))
    assert list(map(blocklist.__contains__, ["first", "second", "third"])) == [True, True, False]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:10],
        lambda data: b"NOTKEEL!" + data[8:],
        lambda data: data[:-4],
        lambda data: data[:16] + b"\xff\xff\xff\xff" + data[20:],
    ],
)
def test_damaged_blocklist_data_is_refused(damage: object) -> None:
    data = encode_blocklist(["one", "two", "three"], bucket_bits=8)
    assert callable(damage)
    with pytest.raises(ValueError, match="blocklist"):
        Blocklist(damage(data))


@given(st.lists(st.text(min_size=1, max_size=40), max_size=50))
def test_every_listed_entry_is_found(entries: list[str]) -> None:
    blocklist = Blocklist(encode_blocklist(entries, bucket_bits=8))
    assert all(entry in blocklist for entry in entries)


# Any text, unpaired surrogates included (a JSON body can carry "\ud800").
@given(st.text(alphabet=st.characters() | st.characters(categories=["Cs"]), max_size=80))
def test_check_only_ever_raises_password_rejected(password: str) -> None:
    code = "accepted"
    try:
        TINY_POLICY.check(password, context=["someone@example.com", "Some One"])
    except PasswordRejected as rejected:
        code = rejected.code
    assert code in {"accepted", *get_args(RejectionCode)}


def test_maximum_below_64_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        PasswordPolicy(dataclasses.replace(SETTINGS, max_length=63))
    with pytest.raises(ConfigurationError):
        PasswordPolicy(dataclasses.replace(SETTINGS, min_length=100, max_length=80))
