"""keel.security.tokens: access tokens issued and verified per RFC 8725 (SEC-28..SEC-35).

Attacks are forged by hand (``forge``) so each test controls every byte; a
sanity test first proves that ``forge`` with the right key and claims makes a
token that verifies, so every rejection below is due to its one mutation.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import get_default_algorithms

from keel._clock import FrozenClock, SystemClock
from keel.errors import ConfigurationError, KeelError, Unauthenticated
from keel.security.keys import KeySet, RetiredKey, SigningKey, StagedKey
from keel.security.tokens import (
    MAX_ACCESS_TTL,
    MAX_TOKEN_LENGTH,
    AccessTokens,
    InvalidToken,
    SignedTokens,
    TokenKind,
)
from keel.settings import JwtAlgorithm, TokenSettings

ISSUER = "https://issuer.example"
AUDIENCE = "keel"
GOOD_SECRET = "kV8q2xN0r7TzLp4sWm1bYc6hJd3fGa9e-_QuEiOwRtZ"


def token_settings(algorithm: JwtAlgorithm = "EdDSA", **changes: Any) -> TokenSettings:
    base = TokenSettings(
        algorithm=algorithm,
        key_file=None,
        private_key=None,
        hmac_secret=None,
        issuer=ISSUER,
        audience=AUDIENCE,
        access_ttl=900,
        leeway=30,
    )
    return dataclasses.replace(base, **changes)


def key_set(algorithm: JwtAlgorithm = "EdDSA") -> KeySet:
    if algorithm == "HS256":
        return KeySet(SigningKey.from_secret(GOOD_SECRET))
    return KeySet.generate(algorithm)


@pytest.fixture
def keys() -> KeySet:
    return key_set("EdDSA")


@pytest.fixture
def tokens(keys: KeySet, clock: FrozenClock) -> AccessTokens:
    return AccessTokens(keys, token_settings(), clock=clock)


# --- forging ----------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def segment(value: object) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


Signer = Callable[[bytes], bytes]


def signer(key: SigningKey) -> Signer:
    """Sign like a JWS library would with ``key`` (raw r||s for ES256)."""
    algorithm = get_default_algorithms()[key.algorithm]
    return lambda data: algorithm.sign(data, key.private_material)


def hmac_signer(secret: bytes, digest: Callable[[], Any] = hashlib.sha256) -> Signer:
    return lambda data: hmac.new(secret, data, digest).digest()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Signer | None) -> str:
    """A compact JWS of ``header`` and ``claims``, signed by ``sign`` (empty if ``None``)."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = sign(signing_input.encode("ascii")) if sign is not None else b""
    return f"{signing_input}.{b64(signature)}"


def header_for(key: SigningKey, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": key.algorithm, "typ": "at+jwt", "kid": key.kid}
    header.update(changes)
    return {name: value for name, value in header.items() if value is not ...}


def claims_at(clock: FrozenClock, **changes: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 600,
        "jti": "b2ZmaWNpYWxseS1yYW5kb20",
        "sid": "session-1",
        "scope": "user",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not ...}


def rejected(tokens: AccessTokens, token: object) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        tokens.verify(cast(str, token))
    return caught.value


def test_forge_makes_valid_tokens_so_each_rejection_is_its_mutation(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    token = forge(header_for(keys.current), claims_at(clock), signer(keys.current))
    claims = tokens.verify(token)
    assert claims.subject == "user-1"
    assert claims.session_id == "session-1"
    assert claims.scopes == frozenset({"user"})


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "HS256"])
def test_round_trip_in_every_algorithm(algorithm: JwtAlgorithm, clock: FrozenClock) -> None:
    keys = key_set(algorithm)
    tokens = AccessTokens(keys, token_settings(algorithm), clock=clock)
    issued = tokens.issue(subject="user-1", session_id="s-1", scopes=["user", "admin", "user"])
    claims = tokens.verify(issued.token)
    assert claims.subject == "user-1"
    assert claims.session_id == "s-1"
    assert claims.scopes == frozenset({"user", "admin"})
    assert claims.jti == issued.jti
    assert claims.issued_at == clock.now()
    assert claims.expires_at == issued.expires_at
    assert jwt.get_unverified_header(issued.token) == {
        "alg": algorithm,
        "typ": "at+jwt",
        "kid": keys.current.kid,
    }


def test_no_scopes_round_trip(tokens: AccessTokens) -> None:
    issued = tokens.issue(subject="u", session_id="s", scopes=[])
    assert tokens.verify(issued.token).scopes == frozenset()


def test_invalid_token_is_one_opaque_unauthenticated_error(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    """STYLE habit 9: one error, the cause chained; never the token in the message."""
    token = forge(header_for(keys.current), claims_at(clock, aud="other-api"), signer(keys.current))
    error = rejected(tokens, token)
    assert isinstance(error, Unauthenticated)
    assert isinstance(error, KeelError)
    assert error.code == "invalid_token"
    assert error.__cause__ is not None
    assert str(error) == "invalid token"
    other = rejected(tokens, "x")
    assert type(other) is type(error)
    assert str(other) == str(error)


def test_issued_token_never_shows_the_token_in_its_repr(tokens: AccessTokens) -> None:
    issued = tokens.issue(subject="u", session_id="s", scopes=["user"])
    assert issued.token not in repr(issued)
    assert issued.token.split(".")[2] not in repr(issued)


def test_sec_43_tokens_never_reach_logs_or_error_messages(
    tokens: AccessTokens, caplog: pytest.LogCaptureFixture
) -> None:
    issued = tokens.issue(subject="user-1", session_id="s", scopes=["user"])
    signature = issued.token.split(".")[2]
    with caplog.at_level(logging.DEBUG):
        tokens.verify(issued.token)
        for bad in (issued.token + "x", _flip_bit(issued.token, 1, 3), issued.token[:-2]):
            error = rejected(tokens, bad)
            assert signature[:20] not in str(error)
            assert signature[:20] not in repr(error)
            assert signature[:20] not in str(error.__cause__)
    assert all(signature[:20] not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("subject", "session_id", "scopes"),
    [
        ("", "s", []),
        ("u", "", []),
        ("u", "s", ["two words"]),
        ("u", "s", ['quote"']),
        ("u", "s", [""]),
        ("x" * 300, "s", []),
    ],
)
def test_issue_refuses_malformed_input(
    tokens: AccessTokens, subject: str, session_id: str, scopes: list[str]
) -> None:
    with pytest.raises(ValueError, match=r"."):
        tokens.issue(subject=subject, session_id=session_id, scopes=scopes)


def test_issue_refuses_a_bare_string_of_scopes(tokens: AccessTokens) -> None:
    with pytest.raises(TypeError):
        tokens.issue(subject="u", session_id="s", scopes="admin")


# --- SEC-28: one algorithm, pinned ------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "nOnE", "NONE"])
@pytest.mark.parametrize("signature", [b"", b"\x00" * 64])
def test_sec_28_rejects_alg_none(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, alg: str, signature: bytes
) -> None:
    token = forge(header_for(keys.current, alg=alg), claims_at(clock), lambda _: signature)
    rejected(tokens, token)


@pytest.mark.parametrize("alg", ["none", "None", "nOnE"])
def test_sec_28_rejects_unsigned_tokens_with_only_two_segments(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, alg: str
) -> None:
    token = forge(header_for(keys.current, alg=alg), claims_at(clock), None)
    rejected(tokens, token)  # "header.payload."
    rejected(tokens, token.rstrip("."))  # "header.payload"


def _public_key_variants(key: SigningKey) -> list[bytes]:
    public = key.public_material
    assert not isinstance(public, bytes)
    variants = [public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)]
    if key.algorithm == "EdDSA":
        variants.append(public.public_bytes(Encoding.Raw, PublicFormat.Raw))
    else:
        variants.append(public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
    jwk = key.public_jwk()
    assert jwk is not None
    variants.append(jwk["x"].encode())
    variants.append(json.dumps(jwk).encode())
    return variants


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
@pytest.mark.parametrize("hs", ["HS256", "HS384", "HS512"])
def test_sec_28_rejects_hmac_signed_with_the_public_key(
    algorithm: JwtAlgorithm, hs: str, clock: FrozenClock
) -> None:
    """The classic confusion: the published public key used as an HMAC secret."""
    keys = key_set(algorithm)
    tokens = AccessTokens(keys, token_settings(algorithm), clock=clock)
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[hs]
    for secret in _public_key_variants(keys.current):
        token = forge(
            header_for(keys.current, alg=hs), claims_at(clock), hmac_signer(secret, digest)
        )
        rejected(tokens, token)


@pytest.mark.parametrize(
    "alg", ["EdDsa", "eddsa", "EDDSA", "Ed25519", "ES256", "RS256", "PS256", "HS256", "", 0, None]
)
def test_sec_28_rejects_other_and_unknown_algs_even_when_signed_by_the_real_key(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, alg: object
) -> None:
    header = header_for(keys.current, alg=alg)
    rejected(tokens, forge(header, claims_at(clock), signer(keys.current)))


def test_sec_28_rejects_a_missing_alg(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    header = header_for(keys.current, alg=...)
    rejected(tokens, forge(header, claims_at(clock), signer(keys.current)))


def test_sec_28_hs256_mode_rejects_other_algs_and_case_variants(clock: FrozenClock) -> None:
    keys = key_set("HS256")
    tokens = AccessTokens(keys, token_settings("HS256"), clock=clock)
    secret = keys.current.private_material
    assert isinstance(secret, bytes)
    good = forge(header_for(keys.current), claims_at(clock), hmac_signer(secret))
    assert tokens.verify(good).subject == "user-1"
    for alg in ("hs256", "Hs256", "HS384", "none", "EdDSA"):
        rejected(
            tokens, forge(header_for(keys.current, alg=alg), claims_at(clock), hmac_signer(secret))
        )


def test_sec_28_tokens_of_one_family_do_not_verify_in_another(clock: FrozenClock) -> None:
    ed = AccessTokens(key_set("EdDSA"), token_settings("EdDSA"), clock=clock)
    es = AccessTokens(key_set("ES256"), token_settings("ES256"), clock=clock)
    hs = AccessTokens(key_set("HS256"), token_settings("HS256"), clock=clock)
    for issuer in (ed, es, hs):
        token = issuer.issue(subject="u", session_id="s", scopes=[]).token
        for verifier in (ed, es, hs):
            if verifier is not issuer:
                rejected(verifier, token)


def test_sec_28_keys_and_configuration_must_agree() -> None:
    with pytest.raises(ConfigurationError):
        AccessTokens(key_set("ES256"), token_settings("EdDSA"))
    with pytest.raises(ConfigurationError):
        AccessTokens(key_set("EdDSA"), token_settings("HS256"))


# --- SEC-29: tampering and structure ----------------------------------------------------------


def _flip_bit(token: str, part: int, bit: int) -> str:
    parts = token.split(".")
    data = bytearray(unb64(parts[part]))
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    parts[part] = b64(bytes(data))
    return ".".join(parts)


@pytest.mark.parametrize("part", [0, 1, 2])
@pytest.mark.parametrize("bit", [0, 7, 100, 333])
def test_sec_29_rejects_a_flipped_bit(tokens: AccessTokens, part: int, bit: int) -> None:
    token = tokens.issue(subject="user-1", session_id="s", scopes=["user"]).token
    rejected(tokens, _flip_bit(token, part, bit))


def test_sec_29_rejects_a_changed_claim_with_the_old_signature(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    token = tokens.issue(subject="user-1", session_id="s", scopes=["user"]).token
    head, _, signature = token.split(".")
    payload = json.loads(unb64(token.split(".")[1]))
    payload["scope"] = "user admin"
    rejected(tokens, f"{head}.{segment(payload)}.{signature}")


def test_sec_29_rejects_a_stripped_signature(tokens: AccessTokens) -> None:
    token = tokens.issue(subject="user-1", session_id="s", scopes=[]).token
    head, payload, _ = token.split(".")
    rejected(tokens, f"{head}.{payload}.")
    rejected(tokens, f"{head}.{payload}")
    rejected(tokens, f"{head}.{payload}.{b64(b'')}")


def test_sec_29_rejects_json_and_flattened_serializations(tokens: AccessTokens) -> None:
    head, payload, signature = tokens.issue(subject="u", session_id="s", scopes=[]).token.split(".")
    flattened = {"payload": payload, "protected": head, "signature": signature}
    general = {"payload": payload, "signatures": [{"protected": head, "signature": signature}]}
    for document in (flattened, general):
        rejected(tokens, json.dumps(document))
        rejected(tokens, json.dumps(document, separators=(",", ":")))


def test_sec_29_rejects_extra_or_missing_segments(tokens: AccessTokens) -> None:
    token = tokens.issue(subject="u", session_id="s", scopes=[]).token
    head, payload, signature = token.split(".")
    for candidate in (
        f"{token}.",
        f"{token}.{signature}",
        f"{head}.{head}.{payload}.{signature}",
        f"{head}.{payload}.{signature}.{signature}.{signature}",  # JWE-shaped
        f".{token}",
        f"{head}..{signature}",
        f"{head}.{payload}",
        head,
        "",
        "..",
    ):
        rejected(tokens, candidate)


def test_sec_29_rejects_anything_but_bare_base64url(tokens: AccessTokens) -> None:
    token = tokens.issue(subject="u", session_id="s", scopes=[]).token
    head, payload, signature = token.split(".")
    std_signature = base64.b64encode(unb64(signature)).decode().rstrip("=")
    for candidate in (
        f"{token}\n",
        f"{token} ",
        f" {token}",
        f"Bearer {token}",
        f"{head}=.{payload}.{signature}",
        f"{head}.{payload}.{signature}==",
        f"{head}.{payload}.{std_signature}" if std_signature != signature else f"{token}+",
        f"{head}.{payload}.{signature[:-1]}\u0410",  # Cyrillic A
        f"{head}.{payload}.{signature[:-1]}\uff21",  # fullwidth A
        token.replace(".", "\u2024"),
    ):
        rejected(tokens, candidate)


def test_sec_29_rejects_non_canonical_base64url(tokens: AccessTokens) -> None:
    """Another spelling of the same signature bytes is refused (no malleability)."""
    token = tokens.issue(subject="u", session_id="s", scopes=[]).token
    head, payload, signature = token.split(".")
    original = unb64(signature)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twins = [
        signature[:-1] + c
        for c in alphabet
        if signature[:-1] + c != signature and unb64(signature[:-1] + c) == original
    ]
    assert twins, "an Ed25519 signature has spare bits in its last character"
    for twin in twins:
        rejected(tokens, f"{head}.{payload}.{twin}")


def test_sec_29_rejects_oversized_tokens_before_parsing(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = forge(header_for(keys.current), claims_at(clock, pad="x" * 9000), signer(keys.current))
    assert len(big) > MAX_TOKEN_LENGTH
    monkeypatch.setattr(json, "loads", _never_called)
    rejected(tokens, big)
    rejected(tokens, "a" * (MAX_TOKEN_LENGTH + 1))


def _never_called(*args: object, **kwargs: object) -> Any:
    raise AssertionError("parsed an oversized token")


def test_sec_29_a_signed_token_just_under_the_limit_is_accepted(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    padded = forge(header_for(keys.current), claims_at(clock, pad="x" * 5800), signer(keys.current))
    assert len(padded) <= MAX_TOKEN_LENGTH
    assert tokens.verify(padded).subject == "user-1"


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ('{"alg":"none","alg":"EdDSA","typ":"at+jwt","kid":"K"}', None),
        ('{"alg":"EdDSA","typ":"JWT","typ":"at+jwt","kid":"K"}', None),
        ("[]", None),
        ('"a string"', None),
        (None, "[]"),
        (None, '{"exp": NaN}'),
        (None, '{"exp": Infinity}'),
        ("not json", None),
        (None, "\xff\xfe"),
    ],
)
def test_sec_29_rejects_malformed_or_ambiguous_json(
    tokens: AccessTokens,
    keys: KeySet,
    clock: FrozenClock,
    header: str | None,
    claims: str | None,
) -> None:
    key = keys.current
    head_text = (header or json.dumps(header_for(key))).replace('"K"', json.dumps(key.kid))
    body_text = (claims or json.dumps(claims_at(clock))).replace('"I"', json.dumps(ISSUER))
    head = b64(head_text.encode("latin-1"))
    body = b64(body_text.encode("latin-1"))
    signature = signer(key)(f"{head}.{body}".encode())
    rejected(tokens, f"{head}.{body}.{b64(signature)}")


def test_sec_29_duplicate_claims_are_refused_even_when_validly_signed(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    body_text = json.dumps(claims_at(clock))[:-1] + ', "sub": "admin"}'
    head = segment(header_for(keys.current))
    body = b64(body_text.encode())
    token = f"{head}.{body}.{b64(signer(keys.current)(f'{head}.{body}'.encode()))}"
    rejected(tokens, token)


@pytest.mark.parametrize("value", [None, 42, b"bytes", ["a.b.c"], {"token": "a.b.c"}])
def test_sec_29_rejects_non_strings(tokens: AccessTokens, value: object) -> None:
    rejected(tokens, value)


# --- SEC-30: time -----------------------------------------------------------------------------


def test_sec_30_rejects_an_expired_token_on_the_frozen_clock(
    tokens: AccessTokens, clock: FrozenClock
) -> None:
    token = tokens.issue(subject="u", session_id="s", scopes=[]).token
    clock.advance(MAX_ACCESS_TTL + 30 - 1)  # inside the 30 s leeway
    assert tokens.verify(token).subject == "u"
    clock.advance(1)
    rejected(tokens, token)
    clock.advance(86_400)
    rejected(tokens, token)


def test_sec_30_rejects_nbf_five_minutes_ahead(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    now = int(clock.now().timestamp())
    ahead = forge(header_for(keys.current), claims_at(clock, nbf=now + 300), signer(keys.current))
    rejected(tokens, ahead)
    clock.advance(300)
    assert tokens.verify(ahead).subject == "user-1"
    past = forge(header_for(keys.current), claims_at(clock, nbf=now - 10), signer(keys.current))
    assert tokens.verify(past).subject == "user-1"


def test_sec_30_rejects_tokens_issued_in_the_future(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    now = int(clock.now().timestamp())
    future = claims_at(clock, iat=now + 300, exp=now + 600)
    rejected(tokens, forge(header_for(keys.current), future, signer(keys.current)))


@pytest.mark.parametrize("claim", ["exp", "iat", "jti", "sub", "sid"])
@pytest.mark.parametrize("value", [..., None, "", 0.5, True, [], {}])
def test_sec_30_rejects_missing_or_malformed_required_claims(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, claim: str, value: object
) -> None:
    if claim in {"exp", "iat"} and value == "":
        value = str(int(clock.now().timestamp()))  # a numeric string is not a NumericDate
    token = forge(
        header_for(keys.current), claims_at(clock, **{claim: value}), signer(keys.current)
    )
    rejected(tokens, token)


@pytest.mark.parametrize("lifetime", [MAX_ACCESS_TTL + 1, 3600, 0, -5])
def test_sec_30_rejects_lifetimes_outside_the_limit(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, lifetime: int
) -> None:
    now = int(clock.now().timestamp())
    claims = claims_at(clock, iat=now - 10, exp=now - 10 + lifetime)
    rejected(tokens, forge(header_for(keys.current), claims, signer(keys.current)))


@pytest.mark.parametrize("leeway", [61, 3600, -1])
def test_sec_30_leeway_is_at_most_sixty_seconds(keys: KeySet, leeway: int) -> None:
    with pytest.raises(ConfigurationError):
        AccessTokens(keys, token_settings(leeway=leeway))


def test_sec_30_zero_leeway_is_exact(keys: KeySet, clock: FrozenClock) -> None:
    tokens = AccessTokens(keys, token_settings(leeway=0, access_ttl=60), clock=clock)
    token = tokens.issue(subject="u", session_id="s", scopes=[]).token
    clock.advance(59)
    assert tokens.verify(token).subject == "u"
    clock.advance(1)
    rejected(tokens, token)


# --- SEC-31: exact issuer and audience --------------------------------------------------------


@pytest.mark.parametrize(
    "aud",
    [
        "other-api",
        "KEEL",
        "keel ",
        "kee",
        "keel/refresh",
        ["other-api"],
        [],
        ["keel-api"],
        [["keel"]],
        "",
        None,
        ...,
        {"keel": True},
    ],
)
def test_sec_31_rejects_other_audiences(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, aud: object
) -> None:
    rejected(
        tokens, forge(header_for(keys.current), claims_at(clock, aud=aud), signer(keys.current))
    )


def test_sec_31_an_audience_list_must_contain_the_exact_value(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    listed = forge(
        header_for(keys.current),
        claims_at(clock, aud=["other-api", AUDIENCE]),
        signer(keys.current),
    )
    assert tokens.verify(listed).subject == "user-1"


@pytest.mark.parametrize(
    "iss",
    [
        "http",
        "https://issuer.example.evil",
        "https://issuer.example/",
        "http://issuer.example",
        "HTTPS://issuer.example",
        "https://issuer.exampl",
        "https://issuer",
        ["https://issuer.example"],
        "",
        None,
        ...,
    ],
)
def test_sec_31_rejects_other_issuers(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, iss: object
) -> None:
    rejected(
        tokens, forge(header_for(keys.current), claims_at(clock, iss=iss), signer(keys.current))
    )


# --- SEC-32: token kinds are mutually exclusive -----------------------------------------------


@pytest.mark.parametrize(
    "typ",
    ["JWT", "jwt", "refresh+jwt", "application/jwt", "at+jwt ", "at", "", None, 1, ["at+jwt"], ...],
)
def test_sec_32_rejects_other_typ_values(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, typ: object
) -> None:
    rejected(
        tokens, forge(header_for(keys.current, typ=typ), claims_at(clock), signer(keys.current))
    )


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"])
def test_sec_32_access_typ_is_case_insensitive_with_optional_application_prefix(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, typ: str
) -> None:
    token = forge(header_for(keys.current, typ=typ), claims_at(clock), signer(keys.current))
    assert tokens.verify(token).subject == "user-1"


def _kind(keys: KeySet, kind: TokenKind, clock: FrozenClock) -> SignedTokens:
    return SignedTokens(
        keys,
        token_settings(),
        kind=kind,
        lifetime=300,
        max_lifetime=3600,
        required=("sid",),
        clock=clock,
    )


@pytest.mark.parametrize("kind", [k for k in TokenKind if k is not TokenKind.ACCESS])
def test_sec_32_other_kinds_and_access_tokens_never_pass_for_each_other(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, kind: TokenKind
) -> None:
    other = _kind(keys, kind, clock)
    foreign = other.encode(subject="user-1", claims={"sid": "s", "scope": "user"}).token
    assert other.decode(foreign)["sub"] == "user-1"
    rejected(tokens, foreign)  # same keys even: typ and aud both differ
    with pytest.raises(InvalidToken):
        other.decode(tokens.issue(subject="user-1", session_id="s", scopes=[]).token)


def test_sec_32_relabelling_the_typ_does_not_help(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    """A refresh-kind token re-signed with typ at+jwt still names the refresh audience."""
    claims = claims_at(clock, aud=TokenKind.REFRESH.audience(AUDIENCE))
    rejected(tokens, forge(header_for(keys.current), claims, signer(keys.current)))


def test_sec_32_every_kind_has_its_own_typ_and_audience() -> None:
    assert TokenKind.ACCESS.typ == "at+jwt"
    assert len({kind.typ for kind in TokenKind}) == len(TokenKind)
    assert len({kind.audience(AUDIENCE) for kind in TokenKind}) == len(TokenKind)
    assert TokenKind.ACCESS.audience(AUDIENCE) == AUDIENCE


# --- SEC-33: header-supplied key material, kid, crit -------------------------------------------


def test_sec_33_rejects_a_token_signed_by_an_attacker_key_with_embedded_jwk(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock
) -> None:
    attacker = SigningKey.generate("EdDSA")
    jwk = attacker.public_jwk()
    for kid in (attacker.kid, keys.current.kid):
        header = header_for(keys.current, kid=kid, jwk=jwk)
        rejected(tokens, forge(header, claims_at(clock), signer(attacker)))


def test_sec_33_jku_x5u_x5c_are_never_fetched_nor_used(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> Any:
        raise AssertionError("a header made keel open a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    attacker = SigningKey.generate("EdDSA")
    remote = {
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIBszCCAVmgAwIBAgIUQ"],
        "jwk": attacker.public_jwk(),
    }
    signed_by_attacker = forge(header_for(attacker, **remote), claims_at(clock), signer(attacker))
    rejected(tokens, signed_by_attacker)
    # Signed by keel's own key, the same members change nothing: they are simply ignored.
    ignored = forge(header_for(keys.current, **remote), claims_at(clock), signer(keys.current))
    assert tokens.verify(ignored).subject == "user-1"


@pytest.mark.parametrize(
    "kid",
    [
        "../../../dev/null",
        "' OR 1=1--",
        "/dev/null",
        "file:///etc/passwd",
        "https://attacker.example/key",
        "",
        "x" * 10_000,
        None,
        0,
        ["kid"],
        ...,
    ],
)
def test_sec_33_kid_is_only_looked_up_in_the_key_set(
    tokens: AccessTokens,
    keys: KeySet,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    kid: object,
) -> None:
    header = header_for(keys.current, kid=kid)
    token = forge(header, claims_at(clock), signer(keys.current))

    def no_files(*args: object, **kwargs: object) -> Any:
        raise AssertionError("a kid opened a file")

    monkeypatch.setattr(builtins, "open", no_files)
    rejected(tokens, token)


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp2"], "exp2": 1},
        {"crit": ["exp2"]},
        {"crit": []},
        {"crit": "exp2"},
        {"crit": ["b64"], "b64": False},
        {"crit": ["b64"], "b64": True},
        {"b64": True},
    ],
)
def test_sec_33_rejects_crit_and_b64(
    tokens: AccessTokens, keys: KeySet, clock: FrozenClock, extra: dict[str, Any]
) -> None:
    header = header_for(keys.current, **extra)
    rejected(tokens, forge(header, claims_at(clock), signer(keys.current)))


# --- SEC-34 (token side): weak keys never sign --------------------------------------------------


def test_sec_34_hs256_with_a_16_byte_secret_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey.from_secret("0123456789abcdef")
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey(b"\x01" * 16)


# --- SEC-35: short-lived, allowlisted claims ----------------------------------------------------


def test_sec_35_lifetime_at_most_fifteen_minutes_and_claims_allowlisted(
    tokens: AccessTokens,
) -> None:
    token = tokens.issue(subject="user-1", session_id="s-1", scopes=["user", "admin"]).token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 900
    assert set(claims) <= {"iss", "aud", "sub", "iat", "exp", "jti", "sid", "scope"}
    assert set(claims) == AccessTokens.CLAIMS
    assert claims["scope"] == "admin user"
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert set(jwt.get_unverified_header(token)) == {"alg", "typ", "kid"}


def test_sec_35_lifetime_follows_the_setting(keys: KeySet, clock: FrozenClock) -> None:
    tokens = AccessTokens(keys, token_settings(access_ttl=300), clock=clock)
    claims = jwt.decode(
        tokens.issue(subject="u", session_id="s", scopes=[]).token,
        options={"verify_signature": False},
    )
    assert claims["exp"] - claims["iat"] == 300


@pytest.mark.parametrize("ttl", [901, 3600, 0])
def test_sec_35_longer_lifetimes_are_refused(keys: KeySet, ttl: int) -> None:
    with pytest.raises(ConfigurationError):
        AccessTokens(keys, token_settings(access_ttl=ttl))


def test_sec_35_jti_is_random_and_at_least_128_bits(tokens: AccessTokens) -> None:
    jtis = {tokens.issue(subject="u", session_id="s", scopes=[]).jti for _ in range(1000)}
    assert len(jtis) == 1000
    assert all(len(unb64(jti)) >= 16 for jti in jtis)


def test_sec_35_keel_sets_the_registered_claims_itself(keys: KeySet, clock: FrozenClock) -> None:
    signed = _kind(keys, TokenKind.REFRESH, clock)
    with pytest.raises(ValueError, match="registered"):
        signed.encode(subject="u", claims={"exp": 2**40})


# --- interoperability -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_plain_pyjwt_verifies_keel_tokens_from_the_published_jwks(algorithm: JwtAlgorithm) -> None:
    """What a resource server does with PyJWKClient, minus the HTTP fetch."""
    keys = KeySet(  # a current key, a staged one and a retired one, as keel keys leaves them
        SigningKey.generate(algorithm),
        [RetiredKey(SigningKey.generate(algorithm), 0)],
        next=StagedKey(SigningKey.generate(algorithm), 0),
    )
    tokens = AccessTokens(keys, token_settings(algorithm), clock=SystemClock())
    issued = tokens.issue(subject="user-1", session_id="s", scopes=["user"])
    jwk_set = jwt.PyJWKSet.from_dict(keys.jwks())
    kid = jwt.get_unverified_header(issued.token)["kid"]
    assert kid in {jwk["kid"] for jwk in keys.jwks()["keys"]}
    claims = jwt.decode(
        issued.token, key=jwk_set[kid], algorithms=[algorithm], audience=AUDIENCE, issuer=ISSUER
    )
    assert claims["sub"] == "user-1"
    assert claims["jti"] == issued.jti


# --- fuzzing ----------------------------------------------------------------------------------

_SEGMENT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60
)
_FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _verify_or_invalid(tokens: AccessTokens, value: object) -> None:
    with contextlib.suppress(InvalidToken):
        tokens.verify(cast(str, value))


@_FUZZ
@given(value=st.one_of(st.text(), st.binary(), st.integers(), st.none(), st.lists(st.text())))
def test_fuzz_verify_only_ever_raises_invalid_token(tokens: AccessTokens, value: object) -> None:
    _verify_or_invalid(tokens, value)


@_FUZZ
@given(parts=st.lists(_SEGMENT, min_size=1, max_size=6))
def test_fuzz_dotted_base64url_only_ever_raises_invalid_token(
    tokens: AccessTokens, parts: list[str]
) -> None:
    _verify_or_invalid(tokens, ".".join(parts))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@_FUZZ
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "crit", "jwk", "b64", "x"]), _JSON, max_size=6
    ),
    claims=st.dictionaries(
        st.sampled_from(["iss", "aud", "sub", "iat", "exp", "nbf", "jti", "sid", "scope"]),
        _JSON,
        max_size=9,
    ),
    signed=st.booleans(),
)
def test_fuzz_json_headers_and_claims_only_ever_raise_invalid_token(
    tokens: AccessTokens,
    keys: KeySet,
    header: dict[str, Any],
    claims: dict[str, Any],
    signed: bool,
) -> None:
    sign = signer(keys.current) if signed else (lambda _: b"\x00" * 64)
    _verify_or_invalid(tokens, forge({**header_for(keys.current), **header}, claims, sign))


@_FUZZ
@given(position=st.integers(min_value=0), replacement=st.characters())
def test_fuzz_mutated_tokens_are_rejected(
    tokens: AccessTokens, position: int, replacement: str
) -> None:
    token = tokens.issue(subject="u", session_id="s", scopes=["user"]).token
    index = position % len(token)
    mutated = token[:index] + replacement + token[index + 1 :]
    if mutated == token:
        return
    try:
        tokens.verify(mutated)
    except InvalidToken:
        return
    # Only a twin spelling of the same bytes could verify, and those are refused too.
    raise AssertionError("a mutated token verified")
