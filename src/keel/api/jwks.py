"""``GET /.well-known/jwks.json``: the public halves of the access-token signing keys.

Relying parties (another service, a gateway, PyJWT's ``PyJWKClient``) verify
keel's access tokens with it, picking the key by the token's ``kid``. It lists
the current key and the previous one kept after a rotation; HMAC (HS256) keys
are never published, so with HS256 the set is empty. Private members never
appear: the body comes from :meth:`keel.security.keys.KeySet.jwks`.

Unlike every other keel response, this one is cacheable on purpose
(``Cache-Control: public, max-age=300``): the keys change only on rotation,
and a client that meets an unknown ``kid`` refetches. The security-headers
middleware keeps a ``Cache-Control`` a route sets itself (it adds ``no-store``
only when there is none), so this route never declares ``no_store``.
"""

from __future__ import annotations

import json
from typing import Final

from fastapi import APIRouter
from fastapi.responses import Response

from keel.security.keys import KeySet

__all__ = ["JWKS_CACHE_CONTROL", "JWKS_PATH", "jwks_router"]

JWKS_PATH: Final = "/.well-known/jwks.json"
#: Five minutes: short enough that a rotation reaches every relying party quickly.
JWKS_CACHE_CONTROL: Final = "public, max-age=300"


def jwks_router(keys: KeySet) -> APIRouter:
    """A router serving ``keys``' public JWK Set at :data:`JWKS_PATH` (no credentials)."""
    # The key set never changes while the process runs: encode the body once.
    body = json.dumps(keys.jwks(), separators=(",", ":"), sort_keys=True).encode("ascii")
    router = APIRouter(tags=["keys"])

    @router.get(
        JWKS_PATH,
        response_class=Response,
        summary="Public signing keys (RFC 7517 JWK Set)",
        responses={200: {"content": {"application/json": {}}, "description": "The JWK Set"}},
    )
    async def jwks() -> Response:
        return Response(
            body, media_type="application/json", headers={"Cache-Control": JWKS_CACHE_CONTROL}
        )

    return router
