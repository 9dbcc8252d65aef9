"""``GET /.well-known/jwks.json``: the public halves of the access-token signing keys.

Relying parties (another service, a gateway, PyJWT's ``PyJWKClient``) verify
keel's access tokens with it, picking the key by the token's ``kid``. It lists
the current key, the staged next key (published before it signs) and the
retired keys until they are dropped; HMAC (HS256) keys are never published, so
with HS256 the set is empty. Private members never appear: the body comes from
:meth:`keel.security.keys.KeySet.jwks`.

Unlike every other keel response, this one is cacheable on purpose
(``Cache-Control: public, max-age=300``, :data:`~keel.security.keys.JWKS_MAX_AGE`,
which is also the least time ``keel keys promote`` wants a staged key published):
the keys change only on rotation, and a client that meets an unknown ``kid``
refetches. The security-headers middleware keeps a ``Cache-Control`` a route
sets itself (it adds ``no-store`` only when there is none), so this route never
declares ``no_store``.
"""

from __future__ import annotations

import json
from typing import Final

from fastapi import APIRouter
from fastapi.responses import Response

from keel._clock import Clock, SystemClock
from keel.api.contract import problems
from keel.security.keys import JWKS_MAX_AGE, KeySet

__all__ = ["JWKS_CACHE_CONTROL", "JWKS_PATH", "build_jwks_router"]

JWKS_PATH: Final = "/.well-known/jwks.json"
#: Five minutes: short enough that a rotation reaches every relying party quickly.
JWKS_CACHE_CONTROL: Final = f"public, max-age={JWKS_MAX_AGE}"


def _encode(keys: KeySet) -> bytes:
    return json.dumps(keys.jwks(), separators=(",", ":"), sort_keys=True).encode("ascii")


_JWKS: Final = {
    "type": "object",
    "required": ["keys"],
    "properties": {"keys": {"type": "array", "items": {"type": "object", "required": ["kty"]}}},
}


def build_jwks_router(
    keys: KeySet, *, keep_for: int | None = None, clock: Clock | None = None
) -> APIRouter:
    """A router serving ``keys``' public JWK Set at :data:`JWKS_PATH` (no credentials).

    With ``keep_for`` (seconds a retired key verifies), a retired key leaves
    the set when it is dropped.
    """
    clock = clock or SystemClock()
    # The key set changes only when a retired key drops: encode the body once per change.
    encoded: list[tuple[bytes, float]] = []

    def body() -> bytes:
        now = clock.now().timestamp()
        if not encoded or now >= encoded[0][1]:
            live = keys if keep_for is None else keys.live(now, keep_for)
            drop = None if keep_for is None else live.next_drop(keep_for)
            encoded[:] = [(_encode(live), float("inf") if drop is None else drop)]
        return encoded[0][0]

    router = APIRouter(tags=["keys"])

    @router.get(
        JWKS_PATH,
        response_class=Response,
        summary="Public signing keys (RFC 7517 JWK Set)",
        responses={
            **problems(),
            200: {"content": {"application/json": {"schema": _JWKS}}, "description": "The JWK Set"},
        },
    )
    async def jwks() -> Response:
        return Response(
            body(), media_type="application/json", headers={"Cache-Control": JWKS_CACHE_CONTROL}
        )

    return router
