"""Bearer authentication over HTTP: the header transport, SEC-28..33 end to end, SEC-36, SEC-43.

Every app here is ``create_app`` with the real ``BearerAuthenticator``; only
the subject directory (the accounts side's database) is a test double.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from keel._clock import FrozenClock
from keel._logging import JsonFormatter
from keel.auth import SubjectRecord, SubjectState
from keel.cache import LocalInvalidations, MemoryStore, Stores
from keel.db import migrate
from keel.errors import CacheUnavailable, DatabaseUnavailable
from keel.security.keys import KeySet, SigningKey
from keel.security.tokens import SignedTokens, TokenKind
from keel.settings import Settings
from tests.unit.auth._app import AuthApp, bearer, build_auth_app
from tests.unit.auth._support import (
    ISSUER,
    Directory,
    active,
    claims_for,
    forge,
    header_for,
    sign_with,
    token_settings,
)

from ._serve import serve_in_process

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def auth(settings_factory: SettingsFactory, clock: FrozenClock) -> AuthApp:
    return build_auth_app(settings_factory(), clock)


@pytest.fixture
async def client(auth: AuthApp) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_in_process(auth.app) as http:
        yield http


@pytest.fixture
async def migrated(settings_factory: SettingsFactory) -> None:
    """The audit tables exist: the admin guard records every denial (SEC-64)."""
    await asyncio.to_thread(migrate.upgrade, settings_factory().database)


def assert_refused(response: httpx.Response, code: str = "invalid_token") -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


# --- the transport: one Authorization header, nothing else -------------------------------------


async def test_a_valid_bearer_token_reaches_the_route(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    issued = auth.tokens.issue(subject="user-1", session_id="sid-42", scopes=["user"])
    response = await client.get("/_t/me", headers=bearer(issued.token))
    assert response.status_code == 200
    assert response.json() == {
        "subject": "user-1",
        "scopes": ["user"],
        "session_id": "sid-42",
        "token_id": issued.jti,
        "expires_at": issued.expires_at.isoformat(),
    }


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR", "Bearer  "])
async def test_the_scheme_is_case_insensitive(
    auth: AuthApp, client: httpx.AsyncClient, scheme: str
) -> None:
    response = await client.get("/_t/me", headers={"Authorization": f"{scheme} {auth.token()}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token {token}",
        "Bearer{token}",
        "Bearer {token} extra",
        "Bearer {token},Bearer {token}",
        "Bearer\t{token}",
        '{{"token": "{token}"}}',
        "Bearer " + "a" * 9000,
    ],
)
async def test_malformed_authorization_headers_give_no_principal(
    auth: AuthApp, client: httpx.AsyncClient, value: str
) -> None:
    response = await client.get(
        "/_t/me", headers={"Authorization": value.format(token=auth.token())}
    )
    assert_refused(response, code="unauthenticated")
    assert auth.directory.loads == 0


async def test_two_authorization_headers_are_no_credential(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    token = auth.token()
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    assert_refused(await client.get("/_t/me", headers=headers), code="unauthenticated")


async def test_sec_43_tokens_in_query_form_or_cookie_are_ignored(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    token = auth.token()
    assert_refused(
        await client.get("/_t/me", params={"access_token": token}), code="unauthenticated"
    )
    assert_refused(
        await client.post("/_t/me", data={"access_token": token}), code="unauthenticated"
    )
    client.cookies.set("access_token", token)
    assert_refused(await client.get("/_t/me"), code="unauthenticated")
    client.cookies.clear()
    assert (await client.get("/_t/me", headers=bearer(token))).status_code == 200


async def test_sec_43_tokens_never_appear_in_captured_logs(
    auth: AuthApp, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    good = auth.token()
    unknown = auth.token("nobody")
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    caplog.set_level(logging.DEBUG)
    await client.get("/_t/me", headers=bearer(good))
    await client.get("/_t/me", params={"access_token": good})
    await client.get(f"/_t/me?access_token={good}&x=1", headers=bearer(tampered))
    await client.get("/_t/me", headers=bearer(unknown))
    await client.post("/_t/me", data={"access_token": good})
    formatter = JsonFormatter()
    # Everything the server side logged; httpx's own lines are the test client's, not keel's.
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    output = "\n".join(formatter.format(record) for record in server_side)
    assert "http_request" in output  # the access lines were captured
    assert "access_token_refused" in output
    for token in (good, unknown, tampered):
        for part in token.split("."):
            assert part not in output


# --- SEC-28..SEC-33 end to end: forged tokens are one opaque 401, never a 500 ------------------


def _forgeries(keys: KeySet, clock: FrozenClock) -> dict[str, str]:
    key = keys.current
    sign = sign_with(key)
    public = key.public_material
    assert not isinstance(public, bytes)
    public_raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    public_pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    attacker = SigningKey.generate("EdDSA")
    now = int(clock.now().timestamp())
    attacker_jwk = attacker.public_jwk()
    good = forge(header_for(key), claims_for(clock), sign)
    head, body, signature = good.split(".")
    tampered_claims = forge(header_for(key), claims_for(clock, sub="admin-1"), None).split(".")[1]
    refresh = SignedTokens(
        keys,
        token_settings(),
        kind=TokenKind.REFRESH,
        lifetime=600,
        max_lifetime=3600,
        clock=clock,
    ).encode(subject="user-1", claims={"sid": "sid-1", "scope": "user"})
    return {
        "sec_28_alg_none": forge(header_for(key, alg="none"), claims_for(clock), None),
        "sec_28_alg_nOnE": forge(header_for(key, alg="nOnE"), claims_for(clock), None),
        "sec_28_hs256_with_raw_public_key": forge(
            header_for(key, alg="HS256"), claims_for(clock), get_hmac(public_raw)
        ),
        "sec_28_hs256_with_pem_public_key": forge(
            header_for(key, alg="HS256"), claims_for(clock), get_hmac(public_pem)
        ),
        "sec_28_unknown_alg": forge(header_for(key, alg="EdDSA2"), claims_for(clock), sign),
        "sec_29_payload_changed_old_signature": f"{head}.{tampered_claims}.{signature}",
        "sec_29_stripped_signature": f"{head}.{body}.",
        "sec_29_extra_segment": f"{good}.{signature}",
        "sec_29_json_serialization": json.dumps(
            {"protected": head, "payload": body, "signature": signature}
        ),
        "sec_30_expired": forge(
            header_for(key),
            claims_for(
                clock,
                iat=int(clock.now().timestamp()) - 900,
                exp=int(clock.now().timestamp()) - 120,
            ),
            sign,
        ),
        "sec_30_nbf_in_five_minutes": forge(
            header_for(key), claims_for(clock, nbf=now + 300), sign
        ),
        "sec_30_missing_exp": forge(header_for(key), claims_for(clock, exp=...), sign),
        "sec_30_missing_jti": forge(header_for(key), claims_for(clock, jti=...), sign),
        "sec_31_other_audience": forge(header_for(key), claims_for(clock, aud="other-api"), sign),
        "sec_31_issuer_prefix": forge(header_for(key), claims_for(clock, iss="https"), sign),
        "sec_31_issuer_suffix": forge(
            header_for(key), claims_for(clock, iss=ISSUER + ".evil"), sign
        ),
        "sec_32_refresh_typ": forge(header_for(key, typ="refresh+jwt"), claims_for(clock), sign),
        "sec_32_a_real_refresh_token": refresh.token,
        "sec_32_no_typ": forge(header_for(key, typ=...), claims_for(clock), sign),
        "sec_33_embedded_attacker_jwk": forge(
            header_for(attacker, jwk=attacker_jwk), claims_for(clock), sign_with(attacker)
        ),
        "sec_33_jku_to_attacker": forge(
            header_for(attacker, jku="https://attacker.example/jwks.json"),
            claims_for(clock),
            sign_with(attacker),
        ),
        "sec_33_kid_path_traversal": forge(
            header_for(key, kid="../../../dev/null"), claims_for(clock), sign
        ),
        "sec_33_kid_sql": forge(header_for(key, kid="' OR 1=1--"), claims_for(clock), sign),
        "sec_33_crit_unknown": forge(header_for(key, crit=["exp2"]), claims_for(clock), sign),
    }


def get_hmac(secret: bytes) -> Callable[[bytes], bytes]:
    """HS256 with ``secret``: the public key used as an HMAC secret (CVE-2022-29217's attack)."""
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


async def _refuse_forgeries(auth: AuthApp, client: httpx.AsyncClient, sec: str) -> set[str]:
    """Send every forgery named ``sec_NN_*``; each must be a 401 with the Bearer challenge.

    Returns the distinct bodies (request id removed); the subject directory must
    never be consulted for any of them (no I/O for an unverified token).
    """
    # The forger is sound: the same recipe with nothing changed is accepted.
    key = auth.keys.current
    control = forge(header_for(key), claims_for(auth.clock), sign_with(key))
    assert (await client.get("/_t/me", headers=bearer(control))).status_code == 200
    loads_before = auth.directory.loads
    forgeries = {n: t for n, t in _forgeries(auth.keys, auth.clock).items() if n.startswith(sec)}
    assert forgeries
    bodies = set()
    for name, token in forgeries.items():
        response = await client.get("/_t/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"] == "Bearer", name
        body = response.json()
        body.pop("request_id")
        bodies.add(json.dumps(body, sort_keys=True))
    assert auth.directory.loads == loads_before
    return bodies


INVALID_TOKEN_BODY = json.dumps(
    {
        "code": "invalid_token",
        "detail": "Authentication required.",
        "status": 401,
        "title": "Unauthorized",
        "type": "urn:keel:problem:invalid_token",
    },
    sort_keys=True,
)


async def test_sec_28_alg_none_hs_confusion_and_unknown_algs_are_401(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    assert await _refuse_forgeries(auth, client, "sec_28") == {INVALID_TOKEN_BODY}


async def test_sec_29_tampered_and_restructured_tokens_are_401(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    bodies = await _refuse_forgeries(auth, client, "sec_29")
    # The JSON serialization is not even a b64token: no credential at all, so its own 401.
    assert INVALID_TOKEN_BODY in bodies
    assert len(bodies) == 2


async def test_sec_30_expired_early_and_incomplete_tokens_are_401(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    assert await _refuse_forgeries(auth, client, "sec_30") == {INVALID_TOKEN_BODY}


async def test_sec_31_other_issuers_and_audiences_are_401(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    assert await _refuse_forgeries(auth, client, "sec_31") == {INVALID_TOKEN_BODY}


async def test_sec_32_other_token_kinds_are_401(auth: AuthApp, client: httpx.AsyncClient) -> None:
    assert await _refuse_forgeries(auth, client, "sec_32") == {INVALID_TOKEN_BODY}


async def test_sec_33_header_key_material_kid_tricks_and_crit_are_401(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    assert await _refuse_forgeries(auth, client, "sec_33") == {INVALID_TOKEN_BODY}


# --- SEC-36: what changes after issuance takes effect on the next request ----------------------


async def test_sec_36_disabled_subject_is_refused_at_once(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    token = auth.token()
    assert (await client.get("/_t/me", headers=bearer(token))).status_code == 200
    auth.directory.change("user-1", SubjectState(False, auth.clock.now(), frozenset({"user"})))
    await auth.security.subject_changed("user-1")
    assert_refused(await client.get("/_t/me", headers=bearer(token)))


async def test_sec_36_tokens_valid_after_bump_refuses_older_tokens(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    old = auth.token()
    assert (await client.get("/_t/me", headers=bearer(old))).status_code == 200
    auth.clock.advance(2)
    auth.directory.change("user-1", active("user", valid_after=auth.clock.now()))
    await auth.security.subject_changed("user-1")
    assert_refused(await client.get("/_t/me", headers=bearer(old)))
    assert (await client.get("/_t/me", headers=bearer(auth.token()))).status_code == 200


async def test_sec_36_scope_removed_turns_the_admin_route_to_403(
    auth: AuthApp, client: httpx.AsyncClient, migrated: None
) -> None:
    token = auth.token("admin-1", "user", "admin")
    assert (await client.get("/admin/audit", headers=bearer(token))).status_code == 200
    auth.directory.change("admin-1", active("user"))  # demoted
    await auth.security.subject_changed("admin-1")
    forbidden = await client.get("/admin/audit", headers=bearer(token))
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "forbidden"
    # Still the same person: authenticated, just no longer an admin.
    assert (await client.get("/_t/me", headers=bearer(token))).json()["scopes"] == ["user"]


async def test_sec_36_an_ended_session_refuses_its_tokens_and_no_other(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    one = auth.token(session_id="sid-a")
    two = auth.token(session_id="sid-a")
    other_session = auth.token(session_id="sid-b")
    for token in (one, two, other_session):
        assert (await client.get("/_t/me", headers=bearer(token))).status_code == 200
    auth.directory.ended.add("sid-a")
    await auth.security.sessions_ended("user-1", ["sid-a"])
    assert_refused(await client.get("/_t/me", headers=bearer(one)))
    assert_refused(await client.get("/_t/me", headers=bearer(two)))
    assert (await client.get("/_t/me", headers=bearer(other_session))).status_code == 200


async def test_the_warm_path_makes_no_database_round_trip(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    token = auth.token()
    for _ in range(20):
        assert (await client.get("/_t/me", headers=bearer(token))).status_code == 200
    assert (auth.directory.loads, auth.directory.session_loads) == (1, 1)
    await auth.security.subject_changed("user-1")  # reads the record once to write it through
    assert (await client.get("/_t/me", headers=bearer(token))).status_code == 200
    assert auth.directory.loads == 2


async def test_a_cache_outage_reads_the_record_instead(
    settings_factory: SettingsFactory, clock: FrozenClock
) -> None:
    class DownStore(MemoryStore):
        async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
            raise CacheUnavailable("Redis did not answer")

    stores = Stores(
        general=MemoryStore(clock), shared=DownStore(clock), channel=LocalInvalidations()
    )
    auth = build_auth_app(settings_factory(), clock, stores=stores)
    async with serve_in_process(auth.app) as client:
        token = auth.token()
        for _ in range(3):
            assert (await client.get("/_t/me", headers=bearer(token))).status_code == 200
        auth.directory.ended.add("sid-1")  # a logout the cache never heard of
        assert_refused(await client.get("/_t/me", headers=bearer(token)))
    assert auth.directory.session_loads == 4


async def test_a_database_outage_is_503_not_401(
    settings_factory: SettingsFactory, clock: FrozenClock
) -> None:
    class DownDirectory(Directory):
        async def load(self, subject_id: str) -> SubjectRecord:
            raise DatabaseUnavailable()

    auth = build_auth_app(settings_factory(), clock, directory=DownDirectory())
    async with serve_in_process(auth.app) as client:
        response = await client.get("/_t/me", headers=bearer(auth.token()))
    assert response.status_code == 503
    assert "www-authenticate" not in response.headers


async def test_expired_tokens_are_refused_on_the_app_clock(
    auth: AuthApp, client: httpx.AsyncClient
) -> None:
    token = auth.token()
    auth.clock.advance(900 + 30 - 1)  # within the leeway
    assert (await client.get("/_t/me", headers=bearer(token))).status_code == 200
    auth.clock.advance(1)
    assert_refused(await client.get("/_t/me", headers=bearer(token)))
