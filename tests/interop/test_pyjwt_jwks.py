"""Interoperability: code nobody here wrote verifies keel's tokens from keel's JWKS, over HTTP.

A real keel server (gunicorn + uvicorn worker, ``tests.interop.factories:app``)
signs access tokens with a key file; PyJWT's ``PyJWKClient`` fetches
``/.well-known/jwks.json`` from it and verifies them, picking the key by
``kid``; joserfc (another implementation) does the same from the same set.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
from joserfc import jwt as joserfc_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet as JoseKeySet

from keel._clock import FrozenClock
from keel.security.key_rotation import promote, stage
from keel.security.keys import (
    JWKS_MAX_AGE,
    KeySet,
    generate_key_file,
    load_key_file,
    write_key_file,
)
from keel.security.tokens import AccessTokens
from keel.settings import JwtAlgorithm, TokenSettings
from tests.interop.factories import SCOPES, SUBJECT
from tests.runtime._harness import RunningServer, running_server

pytestmark = pytest.mark.runtime

ISSUER = "https://keel.interop.test"
AUDIENCE = "keel-interop"
FACTORY = "tests.interop.factories:app"
JWKS = "/.well-known/jwks.json"


@dataclasses.dataclass
class Served:
    server: RunningServer
    algorithm: JwtAlgorithm
    key_file: Path

    @property
    def jwks_url(self) -> str:
        return self.server.base_url + JWKS

    def token(self) -> str:
        response = self.server.client.post("/_test/token", headers={"Connection": "close"})
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def me(self, token: str) -> httpx.Response:
        return self.server.client.get(
            "/_test/me", headers={"Authorization": f"Bearer {token}", "Connection": "close"}
        )


def _serve(tmp: Path, algorithm: JwtAlgorithm) -> Iterator[Served]:
    key_file = tmp / "keys.json"
    generate_key_file(key_file, algorithm)
    # A current key and a retired one, as after `keel keys rotate` and `keel keys promote`.
    now = int(time.time())
    staged = stage(load_key_file(key_file), now - JWKS_MAX_AGE, keep_for=930).keys
    write_key_file(key_file, promote(staged, now, keep_for=930).keys)
    env = {
        "KEEL_JWT_ALGORITHM": algorithm,
        "KEEL_JWT_KEY_FILE": str(key_file),
        "KEEL_JWT_ISSUER": ISSUER,
        "KEEL_JWT_AUDIENCE": AUDIENCE,
    }
    with running_server(tmp / "server", FACTORY, env=env) as server:
        yield Served(server, algorithm, key_file)


@pytest.fixture(scope="module")
def eddsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("eddsa"), "EdDSA")


@pytest.fixture(scope="module")
def es256(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("es256"), "ES256")


@pytest.fixture(params=["EdDSA", "ES256"])
def served(request: pytest.FixtureRequest) -> Served:
    served: Served = request.getfixturevalue("eddsa" if request.param == "EdDSA" else "es256")
    return served


def _pyjwt_verify(served: Served, token: str) -> dict[str, object]:
    client = jwt.PyJWKClient(served.jwks_url, cache_jwk_set=False, timeout=5)
    signing_key = client.get_signing_key_from_jwt(token)
    claims: dict[str, object] = jwt.decode(
        token,
        signing_key.key,
        algorithms=[served.algorithm],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
    )
    return claims


def test_pyjwk_client_verifies_keel_tokens_fetched_over_http(served: Served) -> None:
    token = served.token()
    claims = _pyjwt_verify(served, token)
    assert claims["sub"] == SUBJECT
    assert claims["scope"] == " ".join(SCOPES)
    assert set(claims) == {"iss", "aud", "sub", "iat", "exp", "jti", "sid", "scope"}
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["kid"] == load_key_file(served.key_file).current.kid
    # And keel itself accepts the very same token.
    assert served.me(token).json() == {"subject": SUBJECT, "scopes": list(SCOPES)}


def test_the_set_is_served_cacheable_and_public_only(served: Served) -> None:
    response = served.server.get(JWKS)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    keys = load_key_file(served.key_file)
    document = response.json()
    assert [jwk["kid"] for jwk in document["keys"]] == [keys.current.kid, keys.previous[0].kid]
    assert all("d" not in jwk for jwk in document["keys"])


def test_a_token_signed_by_the_previous_key_still_verifies_after_rotation(
    served: Served,
) -> None:
    """Signed just before `keel keys promote`: relying parties find the old kid in the set."""
    keys = load_key_file(served.key_file)
    settings = TokenSettings(
        algorithm=served.algorithm,
        key_file=None,
        private_key=None,
        hmac_secret=None,
        issuer=ISSUER,
        audience=AUDIENCE,
        access_ttl=900,
        leeway=30,
    )
    just_before = datetime.fromtimestamp(keys.retired[0].retired_at - 10, UTC)
    before_rotation = AccessTokens(
        KeySet(keys.previous[0]), settings, clock=FrozenClock(just_before)
    ).issue(subject=SUBJECT, session_id="sid-old", scopes=list(SCOPES))
    assert jwt.get_unverified_header(before_rotation.token)["kid"] == keys.previous[0].kid
    assert _pyjwt_verify(served, before_rotation.token)["sub"] == SUBJECT
    assert served.me(before_rotation.token).status_code == 200


def test_keel_refuses_a_token_pyjwt_signs_with_a_key_it_does_not_publish(served: Served) -> None:
    stranger = KeySet.generate(served.algorithm).current
    forged = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "iat": 0, "exp": 2**31, "jti": "x"},
        stranger.private_material,
        algorithm=served.algorithm,
        headers={"typ": "at+jwt", "kid": stranger.kid},
    )
    with pytest.raises(jwt.PyJWKClientError):
        jwt.PyJWKClient(served.jwks_url, cache_jwk_set=False).get_signing_key_from_jwt(forged)
    response = served.me(forged)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_joserfc_verifies_keel_es256_tokens_from_the_served_set(es256: Served) -> None:
    token = es256.token()
    key_set = JoseKeySet.import_key_set(httpx.get(es256.jwks_url).json())
    decoded = joserfc_jwt.decode(token, key_set, algorithms=["ES256"])
    joserfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        sub={"essential": True, "value": SUBJECT},
        jti={"essential": True},
    ).validate(decoded.claims)
    assert decoded.header["typ"] == "at+jwt"


def test_joserfc_verifies_eddsa_tokens_but_flags_the_alg_name(eddsa: Served) -> None:
    """RFC 9864 deprecates the polymorphic "EdDSA" in favour of "Ed25519"; joserfc says so."""
    token = eddsa.token()
    key_set = JoseKeySet.import_key_set(httpx.get(eddsa.jwks_url).json())
    with pytest.warns(SecurityWarning, match="RFC 9864"):
        decoded = joserfc_jwt.decode(token, key_set, algorithms=["EdDSA"])
    assert decoded.claims["sub"] == SUBJECT


def test_no_token_reaches_the_server_log(served: Served) -> None:
    token = served.token()
    served.me(token)
    served.server.client.get(f"/_test/me?access_token={token}", headers={"Connection": "close"})
    logs = served.server.logs()
    assert "http_request" in logs
    for part in token.split("."):
        assert part not in logs
    assert "Traceback" not in logs
