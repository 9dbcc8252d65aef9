"""keel.security.keys: key material, key sets, the JWKS, key files and rotation (SEC-33, SEC-34)."""

from __future__ import annotations

import builtins
import dataclasses
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from joserfc.jwk import ECKey, OKPKey
from pydantic import SecretStr

from keel._clock import FrozenClock
from keel.security.key_set import RetiredKey, StagedKey
from keel.security.keys import (
    KeyConfigurationError,
    KeySet,
    SigningKey,
    generate_key_file,
    key_findings,
    load_key_file,
    load_key_set,
    write_key_file,
)
from keel.security.tokens import AccessTokens
from keel.settings import JwtAlgorithm, TokenSettings

GOOD_SECRET = "kV8q2xN0r7TzLp4sWm1bYc6hJd3fGa9e-_QuEiOwRtZ"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth", "r", "t"}

# RFC 8037 Appendix A.1-A.3: an Ed25519 key and its RFC 7638 thumbprint.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def token_settings(algorithm: JwtAlgorithm = "EdDSA", **changes: Any) -> TokenSettings:
    base = TokenSettings(
        algorithm=algorithm,
        key_file=None,
        private_key=None,
        hmac_secret=None,
        issuer="https://issuer.example",
        audience="keel",
        access_ttl=900,
        leeway=30,
    )
    return dataclasses.replace(base, **changes)


def pem(private: Ed25519PrivateKey | ec.EllipticCurvePrivateKey, password: bytes = b"") -> str:
    encryption = BestAvailableEncryption(password) if password else NoEncryption()
    return private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption).decode()


def finding_ids(settings: TokenSettings, *, production: bool) -> list[str]:
    return [finding[0] for finding in key_findings(settings, production=production)]


# --- keys and kids ----------------------------------------------------------------------------


def test_kid_is_the_rfc_7638_thumbprint_from_rfc_8037() -> None:
    key = SigningKey.from_jwk({"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D, "x": RFC8037_X})
    assert key.kid == RFC8037_THUMBPRINT
    assert key.algorithm == "EdDSA"
    assert key.public_jwk() == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": RFC8037_X,
        "kid": RFC8037_THUMBPRINT,
        "alg": "EdDSA",
        "use": "sig",
    }


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_kid_matches_an_independent_thumbprint(algorithm: JwtAlgorithm) -> None:
    """joserfc (not written here) computes the same RFC 7638 thumbprint."""
    key = SigningKey.generate(algorithm)
    jwk = key.public_jwk()
    assert jwk is not None
    members: dict[str, str | list[str]] = {
        name: jwk[name] for name in ("kty", "crv", "x", "y") if name in jwk
    }
    imported = OKPKey.import_key(members) if algorithm == "EdDSA" else ECKey.import_key(members)
    assert key.kid == imported.thumbprint()


def test_hmac_kid_is_stable_and_reveals_no_plain_hash_of_the_secret() -> None:
    first = SigningKey.from_secret(GOOD_SECRET)
    assert first.kid == SigningKey.from_secret(GOOD_SECRET).kid
    assert first.kid != SigningKey.from_secret(GOOD_SECRET + "x").kid
    assert first.public_jwk() is None


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "HS256"])
def test_private_jwk_round_trips(algorithm: JwtAlgorithm) -> None:
    key = SigningKey.generate(algorithm)
    again = SigningKey.from_jwk(key.private_jwk())
    assert again.kid == key.kid
    assert again.algorithm == algorithm
    assert key.private_jwk()["kid"] == key.kid


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "HS256"])
def test_repr_shows_no_private_material(algorithm: JwtAlgorithm) -> None:
    key = SigningKey.generate(algorithm)
    secret_part = key.private_jwk()["k" if algorithm == "HS256" else "d"]
    assert secret_part not in repr(key)
    assert secret_part not in repr(KeySet(key))


def _mutated(jwk: dict[str, str], **changes: str | None) -> dict[str, str]:
    out = dict(jwk)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


@pytest.mark.parametrize(
    "changes",
    [
        {"kid": "someone-else"},
        {"alg": "ES256"},
        {"x": RFC8037_THUMBPRINT},
        {"d": None},
        {"x": None},
        {"d": RFC8037_D + "="},
        {"d": RFC8037_D[:-1] + "B"},  # non-canonical spelling
        {"crv": "Ed448"},
        {"kty": "RSA"},
        {"kty": None},
    ],
)
def test_from_jwk_refuses_inconsistent_or_unsupported_keys(changes: dict[str, str | None]) -> None:
    jwk = SigningKey.from_jwk(
        {"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D, "x": RFC8037_X}
    ).private_jwk()
    with pytest.raises(ValueError, match=r"."):
        SigningKey.from_jwk(_mutated(jwk, **changes))


def test_from_jwk_refuses_short_hmac_and_foreign_curves() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey.from_jwk({"kty": "oct", "k": "c2hvcnQ"})
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        SigningKey(p384)
    es = SigningKey.generate("ES256").private_jwk()
    with pytest.raises(ValueError, match=r"."):
        SigningKey.from_jwk({**es, "crv": "P-384"})


def test_from_pem_must_suit_the_algorithm() -> None:
    ed = Ed25519PrivateKey.generate()
    assert SigningKey.from_pem(pem(ed), "EdDSA").algorithm == "EdDSA"
    with pytest.raises(ValueError, match="EdDSA"):
        SigningKey.from_pem(pem(ed), "ES256")
    p256 = ec.generate_private_key(ec.SECP256R1())
    assert SigningKey.from_pem(pem(p256), "ES256").algorithm == "ES256"


# --- key sets and the JWKS --------------------------------------------------------------------


def test_key_set_holds_one_algorithm_and_distinct_keys() -> None:
    ed = SigningKey.generate("EdDSA")
    with pytest.raises(ValueError, match="same algorithm"):
        KeySet(ed, [RetiredKey(SigningKey.generate("ES256"), 0)])
    with pytest.raises(ValueError, match="same algorithm"):
        KeySet(ed, next=StagedKey(SigningKey.generate("ES256"), 0))
    with pytest.raises(ValueError, match="twice"):
        KeySet(ed, [RetiredKey(ed, 0)])
    with pytest.raises(ValueError, match="twice"):
        KeySet(ed, next=StagedKey(ed, 0))
    with pytest.raises(ValueError, match="previous"):
        KeySet(ed, [RetiredKey(SigningKey.generate("EdDSA"), 0) for _ in range(5)])


def _every_state(keys: KeySet) -> KeySet:
    """``keys``' current key retired, plus a new current key and a staged one."""
    algorithm = keys.algorithm
    return KeySet(
        SigningKey.generate(algorithm),
        [RetiredKey(keys.current, 0)],
        next=StagedKey(SigningKey.generate(algorithm), 0),
    )


@pytest.mark.parametrize(
    "kid", ["../../../dev/null", "' OR 1=1--", "/etc/passwd", "https://attacker.example/k", ""]
)
def test_sec_33_kid_lookup_is_a_mapping_lookup_only(
    kid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = KeySet.generate()

    def no_files(*args: object, **kwargs: object) -> Any:
        raise AssertionError("a kid opened a file")

    monkeypatch.setattr(builtins, "open", no_files)
    monkeypatch.setattr(os, "open", no_files)
    assert keys.find(kid) is None
    assert keys.find(keys.current.kid) is keys.current


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_sec_33_jwks_publishes_public_keys_only(
    algorithm: JwtAlgorithm, clock: FrozenClock
) -> None:
    keys = _every_state(KeySet.generate(algorithm))
    jwks = keys.jwks()
    assert set(jwks) == {"keys"}
    assert keys.next is not None
    published = [jwk["kid"] for jwk in jwks["keys"]]
    assert published == [keys.current.kid, keys.next.key.kid, keys.previous[0].kid]
    for jwk in jwks["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk)
        assert jwk["alg"] == algorithm
        assert jwk["use"] == "sig"
    serialised = json.dumps(jwks)
    for key in keys:
        assert key.private_jwk()["d"] not in serialised
    token = AccessTokens(keys, token_settings(algorithm), clock=clock).issue(
        subject="u", session_id="s", scopes=[]
    )
    header = json.loads(_unb64(token.token.split(".")[0]))
    assert header["kid"] in {jwk["kid"] for jwk in jwks["keys"]}


def _unb64(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_sec_34_hs256_keys_are_never_published() -> None:
    keys = _every_state(KeySet(SigningKey.from_secret(GOOD_SECRET)))
    assert keys.jwks() == {"keys": []}
    assert GOOD_SECRET not in json.dumps(keys.jwks())


# --- key files and rotation -------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "HS256"])
def test_generate_key_file_writes_mode_0600_and_round_trips(
    tmp_path: Path, algorithm: JwtAlgorithm
) -> None:
    path = tmp_path / "keys.json"
    created = generate_key_file(path, algorithm)
    assert _mode(path) == 0o600
    loaded = load_key_file(path)
    assert loaded.current.kid == created.current.kid
    assert loaded.previous == ()
    assert loaded.algorithm == algorithm
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"], "no temporary file left"


def test_generate_key_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        generate_key_file(path)
    assert path.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


def test_write_key_file_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    generate_key_file(path)
    before = path.read_bytes()

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_key_file(path, KeySet.generate())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


def test_a_key_file_round_trips_every_state(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    generate_key_file(path)
    keys = _every_state(load_key_file(path))
    path.chmod(0o644)
    write_key_file(path, keys)
    assert _mode(path) == 0o600
    loaded = load_key_file(path)
    assert loaded.current.kid == keys.current.kid
    assert loaded.next is not None
    assert keys.next is not None
    assert (loaded.next.key.kid, loaded.next.staged_at) == (keys.next.key.kid, keys.next.staged_at)
    assert [(r.key.kid, r.retired_at) for r in loaded.retired] == [
        (r.key.kid, r.retired_at) for r in keys.retired
    ]
    assert json.loads(path.read_text())["version"] == 2


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"current": []}',
        b'{"previous": []}',
        b'{"current": {}, "previous": {}}',
        b'{"current": {"kty": "OKP"}}',
        b'{"current": {"kty": "oct", "k": "c2hvcnQ"}}',
        b'{"current": {"kty": "OKP"}, "previous": [1]}',
        b'{"current": {}, "next": {}}',
        b'{"version": 3, "current": {"kty": "OKP"}}',
        b'{"version": 2, "current": {"kty": "OKP"}, "previous": []}',
        b'{"version": 2, "current": [], "retired": []}',
        b'{"version": 2, "current": {}, "retired": [{"key": {}, "retired_at": "soon"}]}',
        b'{"version": 2, "current": {}, "next": {"key": {}, "staged_at": -1}}',
        b'{"version": 2, "current": {}, "next": {"key": [], "staged_at": 1}}',
        b'{"version": 2, "current": {}, "next": {"staged_at": 1}}',
        b"[" * 100_000,
    ],
)
def test_unusable_key_files_are_e017(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(KeyConfigurationError) as caught:
        load_key_file(path)
    assert caught.value.finding_id == "E017"
    assert finding_ids(token_settings(key_file=str(path)), production=True) == ["E017"]


def test_missing_or_unreadable_key_files_are_e017(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.json", tmp_path):
        with pytest.raises(KeyConfigurationError) as caught:
            load_key_file(path)
        assert caught.value.finding_id == "E017"
        assert str(path) not in caught.value.message


# --- keys from settings (SEC-34) --------------------------------------------------------------


def test_load_key_set_from_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    created = generate_key_file(path, "ES256")
    keys = load_key_set(token_settings("ES256", key_file=str(path)), production=True)
    assert keys.current.kid == created.current.kid
    assert key_findings(token_settings("ES256", key_file=str(path)), production=True) == []


def test_key_file_algorithm_must_match_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    generate_key_file(path, "ES256")
    with pytest.raises(KeyConfigurationError) as caught:
        load_key_set(token_settings("EdDSA", key_file=str(path)), production=True)
    assert caught.value.finding_id == "E017"


def test_load_key_set_from_a_pem_setting() -> None:
    private = Ed25519PrivateKey.generate()
    settings = token_settings(private_key=SecretStr(pem(private)))
    keys = load_key_set(settings, production=True)
    assert keys.current.kid == SigningKey(private).kid
    assert key_findings(settings, production=True) == []


@pytest.mark.parametrize(
    "value",
    [
        "not a pem",
        pem(ec.generate_private_key(ec.SECP256R1())),  # the wrong algorithm
        pem(Ed25519PrivateKey.generate(), password=b"hunter2-hunter2"),  # encrypted
    ],
)
def test_unusable_pem_settings_are_e018(value: str) -> None:
    settings = token_settings(private_key=SecretStr(value))
    with pytest.raises(KeyConfigurationError) as caught:
        load_key_set(settings, production=False)
    assert caught.value.finding_id == "E018"
    assert finding_ids(settings, production=False) == ["E018"]


def test_load_key_set_from_a_strong_hmac_secret() -> None:
    settings = token_settings("HS256", hmac_secret=SecretStr(GOOD_SECRET))
    keys = load_key_set(settings, production=True)
    assert keys.algorithm == "HS256"
    assert keys.current.private_material == GOOD_SECRET.encode()
    assert key_findings(settings, production=True) == []


@pytest.mark.parametrize(
    "secret",
    [
        "secret",
        "0123456789abcdef",  # 16 bytes
        "q" * 31,
        "secret" * 6,
        "your-256-bit-secret" * 2,
        "changeme-changeme-changeme-changeme",
        "please-replace-me-with-a-real-key-0123456789",
        "abababababababababababababababab",
    ],
)
@pytest.mark.parametrize("production", [True, False])
def test_sec_34_weak_hmac_secrets_are_refused_and_reported(secret: str, production: bool) -> None:
    settings = token_settings("HS256", hmac_secret=SecretStr(secret))
    with pytest.raises(KeyConfigurationError) as caught:
        load_key_set(settings, production=production)
    assert caught.value.finding_id == "E016"
    findings = key_findings(settings, production=production)
    assert [f[0] for f in findings] == ["E016"]
    if len(secret) >= 16:  # shorter ones ("secret") are words the messages use anyway
        assert all(secret not in part for part in findings[0])
    with pytest.raises(ValueError, match=r"."):
        SigningKey.from_secret(secret)


def test_sec_34_missing_keys_fail_in_production() -> None:
    for algorithm in ("EdDSA", "ES256", "HS256"):
        settings = token_settings(algorithm)
        with pytest.raises(KeyConfigurationError) as caught:
            load_key_set(settings, production=True)
        assert caught.value.finding_id == "E015"
        assert finding_ids(settings, production=True) == ["E015"]


def test_development_without_keys_uses_an_ephemeral_key_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = token_settings()
    with caplog.at_level(logging.WARNING, logger="keel.security.keys"):
        first = load_key_set(settings, production=False)
    assert [r.getMessage() for r in caplog.records] == ["jwt_ephemeral_key"]
    assert first.current.kid != load_key_set(settings, production=False).current.kid
    # No finding: keel serve and keel dev share a development key file (W009 is retired).
    assert finding_ids(settings, production=False) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"private_key": SecretStr("pem"), "hmac_secret": SecretStr(GOOD_SECRET)},
        {"key_file": "/nonexistent", "private_key": SecretStr("pem")},
        {"hmac_secret": SecretStr(GOOD_SECRET)},  # EdDSA configured
    ],
)
def test_conflicting_key_settings_are_e018(changes: dict[str, Any]) -> None:
    settings = token_settings(**changes)
    with pytest.raises(KeyConfigurationError) as caught:
        load_key_set(settings, production=False)
    assert caught.value.finding_id == "E018"
    assert finding_ids(settings, production=False) == ["E018"]


def test_pem_with_hs256_is_e018() -> None:
    settings = token_settings("HS256", private_key=SecretStr(pem(Ed25519PrivateKey.generate())))
    assert finding_ids(settings, production=True) == ["E018"]


def test_a_key_file_readable_by_others_is_w010(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    generate_key_file(path)
    path.chmod(0o644)
    assert finding_ids(token_settings(key_file=str(path)), production=True) == ["W010"]
