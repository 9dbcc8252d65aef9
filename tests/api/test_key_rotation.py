"""Key rotation end to end: a new key is published before it signs, a retired key stops signing.

Every app here is ``create_app`` with the real ``BearerAuthenticator`` over the
key file as an instance reads it at start-up ("reload" = read the file again
and build a new app).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from keel._clock import FrozenClock
from keel.db import migrate
from keel.security.keys import generate_key_file, load_key_file, rotate
from keel.settings import Settings
from tests.unit.auth._app import bearer, build_auth_app
from tests.unit.auth._support import claims_for, forge, header_for, sign_with

from .conftest import serve_in_process

SettingsFactory = Callable[..., Settings]


def _kid(token: str) -> str:
    import base64

    header = token.split(".")[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


async def test_a_token_forged_with_the_retired_key_after_rotation_is_refused(
    settings_factory: SettingsFactory, clock: FrozenClock, tmp_path: Path
) -> None:
    settings = settings_factory()
    await asyncio.to_thread(migrate.upgrade, settings.database)
    path = tmp_path / "keys.json"
    leaked = generate_key_file(path).current
    clock.advance(60)
    rotate(path)
    clock.advance(600)
    auth = build_auth_app(settings, clock, keys=load_key_file(path))  # reloaded instance
    forged = forge(
        header_for(leaked),
        claims_for(clock, "admin-1", sid="random-session", scope="admin user"),
        sign_with(leaked),
    )
    async with serve_in_process(auth.app) as http:
        response = await http.get("/admin/audit", headers=bearer(forged))
    assert response.status_code == 401, response.text


async def test_rotate_publishes_the_new_key_without_signing_with_it(
    settings_factory: SettingsFactory, clock: FrozenClock, tmp_path: Path
) -> None:
    path = tmp_path / "keys.json"
    first = generate_key_file(path).current
    rotate(path)
    auth = build_auth_app(settings_factory(), clock, keys=load_key_file(path))
    assert _kid(auth.token()) == first.kid, "a freshly staged key must not sign"
    async with serve_in_process(auth.app) as http:
        published = (await http.get("/.well-known/jwks.json")).json()
    assert first.kid in [jwk["kid"] for jwk in published["keys"]]
    assert len(published["keys"]) == 2, "the staged key is published"
