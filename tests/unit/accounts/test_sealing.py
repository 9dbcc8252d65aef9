"""keel.accounts.sealing: outbox bodies sealed per message, opened by every key still known."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from keel.accounts.sealing import BodySealer

BODY = "open https://app.example/reset-password#token=SECRET-TOKEN-123"
OLD = {"k1": SecretStr("an older audit key of enough length 0001")}
NEW = {**OLD, "k2": SecretStr("the current audit key of enough length 2")}


def test_a_sealed_body_opens_only_for_its_own_message() -> None:
    sealer = BodySealer(NEW, "k2")
    sealed = sealer.seal(BODY, message_id="m-1")
    assert b"SECRET-TOKEN-123" not in sealed
    assert sealer.seal(BODY, message_id="m-1") != sealed  # a fresh nonce each time
    assert sealer.open(sealed, key_id="k2", message_id="m-1") == BODY
    assert sealer.open(sealed, key_id="k2", message_id="m-2") is None  # moved to another row
    assert sealer.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), key_id="k2", message_id="m-1") is None
    assert sealer.open(b"short", key_id="k2", message_id="m-1") is None


def test_a_rotation_strands_nothing_and_an_unknown_key_opens_nothing() -> None:
    sealed = BodySealer(OLD, "k1").seal(BODY, message_id="m-1")
    assert BodySealer(NEW, "k2").open(sealed, key_id="k1", message_id="m-1") == BODY
    assert BodySealer(NEW, "k2").open(sealed, key_id="k9", message_id="m-1") is None
    assert "enough length" not in repr(BodySealer(NEW, "k2"))
    with pytest.raises(ValueError, match="names no key"):
        BodySealer(OLD, "k2")
