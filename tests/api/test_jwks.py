"""GET /.well-known/jwks.json: public keys only, cacheable on purpose, usable by plain PyJWT."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest

from keel._clock import FrozenClock
from keel.api.app import create_app
from keel.api.jwks import JWKS_CACHE_CONTROL, JWKS_PATH
from keel.security.keys import KeySet, RetiredKey, SigningKey, StagedKey
from keel.security.tokens import AccessTokens
from keel.settings import JwtAlgorithm, Settings
from tests.unit.auth._support import AUDIENCE, ISSUER, token_settings

from ._serve import serve_in_process

SettingsFactory = Callable[..., Settings]
PRIVATE_MEMBERS = {"d", "k", "p", "q", "dp", "dq", "qi"}


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
async def test_publishes_the_public_keys_and_nothing_private(
    settings_factory: SettingsFactory, algorithm: JwtAlgorithm
) -> None:
    now = int(time.time())
    keys = KeySet(  # current + staged + retired
        SigningKey.generate(algorithm),
        [RetiredKey(SigningKey.generate(algorithm), now)],
        next=StagedKey(SigningKey.generate(algorithm), now),
    )
    app = create_app(settings_factory(jwt_algorithm=keys.algorithm), keys=keys)
    async with serve_in_process(app) as client:
        response = await client.get(JWKS_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert keys.next is not None
    published = [jwk["kid"] for jwk in document["keys"]]
    assert published == [keys.current.kid, keys.next.key.kid, keys.previous[0].kid]
    for jwk in document["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk)
        assert jwk["alg"] == algorithm
        assert jwk["use"] == "sig"
    assert document == keys.jwks()


async def test_hmac_keys_are_never_published(settings_factory: SettingsFactory) -> None:
    keys = KeySet(SigningKey.generate("HS256"))
    app = create_app(settings_factory(jwt_algorithm=keys.algorithm), keys=keys)
    async with serve_in_process(app) as client:
        response = await client.get(JWKS_PATH)
    assert response.json() == {"keys": []}
    secret = keys.current.private_material
    assert isinstance(secret, bytes)
    assert secret.hex() not in response.text


async def test_is_cacheable_while_keeping_every_other_security_header(
    settings_factory: SettingsFactory,
) -> None:
    """The one deliberate exception to no-store: the middleware keeps the route's own value."""
    app = create_app(settings_factory(), keys=KeySet.generate())
    async with serve_in_process(app) as client:
        jwks = await client.get(JWKS_PATH)
        other = await client.get("/livez")
    assert jwks.headers["cache-control"] == JWKS_CACHE_CONTROL == "public, max-age=300"
    assert jwks.headers.get_list("cache-control") == [JWKS_CACHE_CONTROL]
    assert other.headers["cache-control"] == "no-store"
    for name in ("x-content-type-options", "content-security-policy", "x-frame-options"):
        assert jwks.headers[name] == other.headers[name]
    assert "server" not in jwks.headers


async def test_needs_no_credentials_and_only_answers_get(
    settings_factory: SettingsFactory,
) -> None:
    app = create_app(settings_factory(), keys=KeySet.generate())
    async with serve_in_process(app) as client:
        assert (await client.get(JWKS_PATH, headers={"Authorization": "Bearer junk"})).is_success
        refused = await client.post(JWKS_PATH)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET"


async def test_the_operation_is_documented(settings_factory: SettingsFactory) -> None:
    app = create_app(settings_factory(docs=True), keys=KeySet.generate())
    async with serve_in_process(app) as client:
        schema = (await client.get("/openapi.json")).json()
    assert "get" in schema["paths"][JWKS_PATH]


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
async def test_pyjwt_verifies_keel_tokens_with_the_served_set(
    settings_factory: SettingsFactory, clock: FrozenClock, algorithm: JwtAlgorithm
) -> None:
    keys = KeySet.generate(algorithm)
    tokens = AccessTokens(keys, token_settings(algorithm), clock=clock)
    app = create_app(settings_factory(jwt_algorithm=keys.algorithm), keys=keys)
    async with serve_in_process(app) as client:
        served = jwt.PyJWKSet.from_dict((await client.get(JWKS_PATH)).json())
    issued = tokens.issue(subject="user-1", session_id="sid-1", scopes=["user"])
    kid = jwt.get_unverified_header(issued.token)["kid"]
    [key] = [k for k in served.keys if k.key_id == kid]
    claims = jwt.decode(
        issued.token,
        key.key,
        algorithms=[algorithm],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},  # the FrozenClock is in 2026
    )
    assert claims["sub"] == "user-1"
