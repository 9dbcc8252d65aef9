"""Key rotation end to end: a new key is published before it signs, a retired key stops signing.

Every app here is ``create_app`` with the real ``BearerAuthenticator`` over the
key file as an instance reads it at start-up ("reload" = read the file again
and build a new app). The steps are the ones ``keel keys rotate|promote`` take.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from keel._clock import FrozenClock
from keel.db import migrate
from keel.security.key_rotation import Transition, emergency_rotate, promote, stage
from keel.security.keys import (
    JWKS_MAX_AGE,
    KeySet,
    SigningKey,
    generate_key_file,
    load_key_file,
    write_key_file,
)
from keel.settings import Settings
from tests.unit.auth._app import AuthApp, bearer, build_auth_app
from tests.unit.auth._support import claims_for, forge, header_for, sign_with

from ._serve import serve_in_process

SettingsFactory = Callable[..., Settings]
Start = Callable[[Path], Awaitable["Instance"]]
KEEP_FOR = 900 + 30  # token_settings(): access TTL 900 s, leeway 30 s
LEEWAY = 30


def _kid(token: str) -> str:
    header = token.split(".")[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def _step(path: Path, clock: FrozenClock, step: Callable[[KeySet, int], Transition]) -> None:
    write_key_file(path, step(load_key_file(path), int(clock.now().timestamp())).keys)


def _stage(path: Path, clock: FrozenClock) -> None:
    _step(path, clock, lambda keys, now: stage(keys, now, keep_for=KEEP_FOR))


def _promote(path: Path, clock: FrozenClock) -> None:
    _step(path, clock, lambda keys, now: promote(keys, now, keep_for=KEEP_FOR))


def _admin_token(key: SigningKey, clock: FrozenClock, **changes: object) -> str:
    claims = claims_for(clock, "admin-1", sid="random-session", scope="admin user", **changes)
    return forge(header_for(key), claims, sign_with(key))


class Instance:
    """One keel instance started on the key file as it is now, served until the test ends."""

    def __init__(self, auth: AuthApp, http: httpx.AsyncClient) -> None:
        self.auth = auth
        self.http = http

    def token(self) -> str:
        return self.auth.token()

    async def status(self, token: str, path: str = "/admin/audit") -> int:
        return (await self.http.get(path, headers=bearer(token))).status_code

    async def published(self) -> list[str]:
        response = await self.http.get("/.well-known/jwks.json")
        return [jwk["kid"] for jwk in response.json()["keys"]]


@pytest.fixture
async def start(
    settings_factory: SettingsFactory, clock: FrozenClock
) -> AsyncIterator[Callable[[Path], Awaitable[Instance]]]:
    settings = settings_factory()
    await asyncio.to_thread(migrate.upgrade, settings.database)
    async with AsyncExitStack() as stack:

        async def instance(path: Path) -> Instance:
            auth = build_auth_app(settings, clock, keys=load_key_file(path))
            http = await stack.enter_async_context(serve_in_process(auth.app))
            return Instance(auth, http)

        yield instance


async def test_a_token_forged_with_the_retired_key_after_rotation_is_refused(
    start: Start, clock: FrozenClock, tmp_path: Path
) -> None:
    path = tmp_path / "keys.json"
    leaked = generate_key_file(path).current
    issued_before = _admin_token(leaked, clock)  # a genuine token from before the rotation
    _stage(path, clock)
    clock.advance(JWKS_MAX_AGE)
    _promote(path, clock)
    clock.advance(LEEWAY + 1)
    auth = await start(path)
    assert await auth.status(_admin_token(leaked, clock)) == 401
    assert await auth.status(issued_before) == 200, "tokens issued before retirement live on"
    assert leaked.kid in await auth.published()


async def test_rotate_publishes_the_new_key_without_signing_with_it(
    start: Start, clock: FrozenClock, tmp_path: Path
) -> None:
    path = tmp_path / "keys.json"
    first = generate_key_file(path).current
    _stage(path, clock)
    staged = load_key_file(path).next
    assert staged is not None
    on_staged_file = await start(path)
    assert _kid(on_staged_file.token()) == first.kid, "a freshly staged key must not sign"
    assert await on_staged_file.published() == [first.kid, staged.key.kid]

    clock.advance(JWKS_MAX_AGE)
    _promote(path, clock)
    promoted = await start(path)
    from_promoted = promoted.token()
    assert _kid(from_promoted) == staged.key.kid
    # An instance still on the staged file accepts what a promoted instance signs, and back.
    assert await on_staged_file.status(from_promoted, "/_t/me") == 200
    assert await promoted.status(on_staged_file.token(), "/_t/me") == 200


async def test_a_retired_key_is_dropped_after_the_access_token_lifetime(
    start: Start, clock: FrozenClock, tmp_path: Path
) -> None:
    path = tmp_path / "keys.json"
    old = generate_key_file(path).current
    _stage(path, clock)
    clock.advance(JWKS_MAX_AGE)
    before_retirement = _admin_token(old, clock)
    _promote(path, clock)
    auth = await start(path)
    assert await auth.status(before_retirement, "/_t/me") == 200
    clock.advance(KEEP_FOR)  # the same process, no reload: the key drops on time
    assert await auth.status(before_retirement, "/_t/me") == 401
    assert old.kid not in await auth.published()


async def test_an_emergency_rotation_refuses_the_old_keys_tokens_at_once(
    start: Start, clock: FrozenClock, tmp_path: Path
) -> None:
    path = tmp_path / "keys.json"
    leaked = generate_key_file(path).current
    issued_before = _admin_token(leaked, clock, iat=int(clock.now().timestamp()) - 5)
    _step(path, clock, emergency_rotate)
    auth = await start(path)
    assert await auth.status(issued_before, "/_t/me") == 401
    assert leaked.kid not in await auth.published()
    assert _kid(auth.token()) != leaked.kid


async def test_a_version_1_key_file_retires_its_previous_key_when_it_was_written(
    start: Start, clock: FrozenClock, tmp_path: Path
) -> None:
    old, current = SigningKey.generate(), SigningKey.generate()
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"current": current.private_jwk(), "previous": [old.private_jwk()]}))
    written = int(clock.now().timestamp())
    os.utime(path, (written, written))
    clock.advance(LEEWAY + 1)
    auth = await start(path)
    assert await auth.status(_admin_token(old, clock), "/_t/me") == 401
    assert await auth.status(_admin_token(old, clock, iat=written - 10), "/_t/me") == 200


async def test_pyjwt_style_clients_see_the_staged_key_before_it_signs(
    start: Start, clock: FrozenClock, tmp_path: Path
) -> None:
    """A relying party that cached the JWKS right after the stage verifies the first new token."""
    path = tmp_path / "keys.json"
    generate_key_file(path)
    _stage(path, clock)
    cached = await (await start(path)).published()
    clock.advance(JWKS_MAX_AGE)
    _promote(path, clock)
    first_new_token = (await start(path)).token()
    assert _kid(first_new_token) in cached
