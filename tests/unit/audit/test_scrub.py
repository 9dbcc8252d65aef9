"""SEC-65: no secret survives into audit details, whatever its key or depth."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.audit.canonical import canonical_json
from keel.audit.scrub import REDACTED, scrub, scrub_text

CANARY = "canary-Zq7vX2pL9"

SECRET_KEYS = [
    "password",
    "new_password",
    "Passphrase",
    "client_secret",
    "access_token",
    "refresh_token",
    "api_key",
    "X-Api-Key",
    "apiKey",
    "authorization",
    "Cookie",
    "credentials",
    "private_key",
    "totp_seed",
    "otp",
    "mfaCode",
    "mfa_code",
    "recovery_codes",
    "password_hash",
    "signature",
    "salt",
    "pin",
]
innocent_key = st.sampled_from(["user_id", "reason", "ip", "note", "fields", "count", "items"])
leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
tree = st.recursive(
    leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(innocent_key, children, max_size=3)
    ),
    max_leaves=10,
)
# Whatever a secret key holds: the canary as it is, inside a list, inside an object.
secret_value = st.sampled_from(
    [CANARY, [CANARY], {"value": CANARY}, {"nested": [1, {"x": CANARY}]}, f"prefix {CANARY}"]
)


@st.composite
def with_secret(draw: st.DrawFn) -> dict[str, Any]:
    """A details object with a secret-looking key holding the canary, at any depth."""
    secret_key = draw(st.sampled_from(SECRET_KEYS))
    depth = draw(st.integers(min_value=0, max_value=10))
    node: Any = {secret_key: draw(secret_value)}
    for _ in range(depth):
        siblings = draw(st.dictionaries(innocent_key, tree, max_size=2))
        if draw(st.booleans()):
            node = {**siblings, draw(innocent_key): node}
        else:
            node = {**siblings, "items": [draw(tree), node]}
    details: dict[str, Any] = node if isinstance(node, dict) else {"items": node}
    return details


@given(with_secret())
def test_sec_65_no_canary_survives_under_a_secret_looking_key(details: dict[str, Any]) -> None:
    assert CANARY not in canonical_json(scrub(details)).decode()


@pytest.mark.parametrize(
    "secret",
    [
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLXZhbHVl",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "Bearer 0123456789abcdefABCDEF",
        "basic dXNlcjpwYXNzd29yZA==",
        "-----BEGIN RSA PRIVATE KEY-----",
        "kA7pQ2xZ9mL4vB8nR3tY6wE1uI5oP0sD",  # a raw 32-character token
    ],
)
def test_sec_65_credential_looking_values_go_whatever_their_key(secret: str) -> None:
    details = {"note": secret, "items": [{"comment": f"see {secret}"}]}
    scrubbed = canonical_json(scrub(details)).decode()
    assert secret not in scrubbed
    assert REDACTED in scrubbed


@given(
    prefix=st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", max_size=10),
    token=st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
        min_size=1,
        max_size=60,
    ),
)
def test_sec_65_jwt_shaped_values_never_survive(prefix: str, token: str) -> None:
    jwt = f"eyJ{token}hdr.eyJ{token}body.{token}sig"
    assert jwt not in scrub_text(prefix + jwt)


def test_ids_are_kept() -> None:
    user = str(uuid.uuid4())
    details = {"user_id": user, "count": 3, "ok": True, "reason": "bad_password", "ref": None}
    assert scrub(details) == details


@given(st.uuids())
def test_uuids_are_never_taken_for_secrets(value: uuid.UUID) -> None:
    assert scrub_text(str(value)) == str(value)
    assert scrub_text(f"user {value} locked") == f"user {value} locked"


def test_depth_is_bounded() -> None:
    deep: Any = CANARY
    for _ in range(20):
        deep = {"items": [deep]}
    assert CANARY not in canonical_json(scrub(deep)).decode()


def test_long_strings_are_bounded() -> None:
    assert len(scrub_text("a " * 10_000)) <= 512
