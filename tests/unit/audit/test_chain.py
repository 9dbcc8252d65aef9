"""Keys and seals: the keyring, the fast HMAC, chain positions."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from keel.audit import GENESIS_HASH, AuditKeyring, ChainLink, keyring_from_settings
from keel.audit.chain import seal
from keel.errors import ConfigurationError
from keel.settings import AuditSettings


@given(key=st.binary(min_size=32, max_size=200), message=st.binary(max_size=2000))
def test_the_precomputed_seal_is_hmac_sha256(key: bytes, message: bytes) -> None:
    keyring = AuditKeyring(current_id="k", keys={"k": key})
    expected = hmac.new(key, message, hashlib.sha256).hexdigest()
    assert keyring.seal(message) == expected == seal(key, message)


def test_rotation_keeps_old_keys_for_verification() -> None:
    keyring = AuditKeyring(current_id="k2", keys={"k1": b"1" * 32, "k2": b"2" * 32})
    assert keyring.current_key == b"2" * 32
    assert keyring.seal(b"row") == seal(b"2" * 32, b"row")
    assert keyring.seal(b"row", "k1") == seal(b"1" * 32, b"row")
    assert keyring.sealer("k3") is None


def test_keys_must_be_long_and_the_current_one_present() -> None:
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        AuditKeyring(current_id="k", keys={"k": b"short"})
    with pytest.raises(ValueError, match="must be in the keyring"):
        AuditKeyring(current_id="k2", keys={"k1": b"1" * 32})


def test_keyring_from_settings() -> None:
    settings = AuditSettings(
        current_key_id="k2",
        keys={"k1": SecretStr("a" * 32), "k2": SecretStr("b" * 64)},
        is_development_key=False,
    )
    keyring = keyring_from_settings(settings)
    assert keyring.current_id == "k2"
    assert keyring.keys == {"k1": b"a" * 32, "k2": b"b" * 64}
    short = AuditSettings(
        current_key_id="k1", keys={"k1": SecretStr("tiny-secret")}, is_development_key=False
    )
    with pytest.raises(ConfigurationError) as caught:
        keyring_from_settings(short)
    assert "shorter than 32 bytes" in caught.value.message
    assert "tiny-secret" not in caught.value.message  # names the key id, never the key


def test_chain_positions_parse_and_print() -> None:
    link = ChainLink.parse(f"12:{'AB' * 32}")
    assert link == ChainLink(12, "ab" * 32)
    assert str(link) == f"12:{'ab' * 32}"
    assert ChainLink.parse(f" 0:{GENESIS_HASH}\n") == ChainLink(0, GENESIS_HASH)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12",
        "12:",
        f"-1:{'a' * 64}",
        f"x:{'a' * 64}",
        "12:abc",
        f"12:{'g' * 64}",
        f"²:{'a' * 64}",
    ],
)
def test_bad_chain_positions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="SEQ:HASH"):
        ChainLink.parse(text)
