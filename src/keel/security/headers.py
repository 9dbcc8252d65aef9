"""The security headers every keel response carries (SEC-56, SEC-57, SEC-58, SEC-59).

Pure policy: it works on ASGI-style raw header lists (``(name, value)`` byte
pairs) and imports nothing from the web framework, so the HTTP layer only has
to call :meth:`HeaderPolicy.apply` on each ``http.response.start``.

What :meth:`HeaderPolicy.apply` does to a response's headers:

- sets the fixed set in :data:`BASE_HEADERS` and a Content-Security-Policy,
  replacing any value the application set for the same names;
- sets ``Strict-Transport-Security`` only when the request arrived over HTTPS
  (behind a trusted proxy that is what ``X-Forwarded-Proto`` said) and
  ``hsts_max_age`` is positive;
- removes fingerprinting headers (:data:`REMOVED_HEADERS`);
- keeps a ``Cache-Control`` the application set, adds ``Cache-Control:
  no-store`` when there is none (an identity API caches nothing by default),
  and forces ``no-store`` when the response is marked sensitive.

The documentation pages (Swagger UI, ReDoc) cannot render under the API's
``default-src 'none'``; they get :data:`DOCS_CSP` instead, but only for the
exact paths listed in ``relaxed_csp_paths`` (the HTTP layer passes them only
when the docs are enabled).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "API_CSP",
    "BASE_HEADERS",
    "DOCS_CSP",
    "NO_STORE",
    "PERMISSIONS_POLICY",
    "REMOVED_HEADERS",
    "HeaderPolicy",
]

RawHeaders = list[tuple[bytes, bytes]]

#: The API's Content-Security-Policy: JSON needs nothing, so nothing is allowed.
API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

#: The Content-Security-Policy of the documentation pages only. FastAPI's Swagger UI
#: and ReDoc pages load their bundle from jsDelivr, run one inline bootstrap script,
#: use inline styles, ReDoc's fonts come from Google Fonts and it runs a blob: worker,
#: and the favicon comes from fastapi.tiangolo.com. Everything else stays closed.
DOCS_CSP: Final = (
    "default-src 'none'; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src https://fonts.gstatic.com; "
    "connect-src 'self'; "
    "worker-src blob:; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

_FEATURES: Final = (
    "accelerometer",
    "autoplay",
    "browsing-topics",
    "camera",
    "display-capture",
    "encrypted-media",
    "fullscreen",
    "geolocation",
    "gyroscope",
    "hid",
    "interest-cohort",
    "magnetometer",
    "microphone",
    "midi",
    "payment",
    "picture-in-picture",
    "publickey-credentials-get",
    "screen-wake-lock",
    "serial",
    "sync-xhr",
    "usb",
    "xr-spatial-tracking",
)

#: Every powerful browser feature with an empty allowlist.
PERMISSIONS_POLICY: Final = ", ".join(f"{feature}=()" for feature in _FEATURES)

#: Set on every response, whatever the application set for the same names.
BASE_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("X-Permitted-Cross-Domain-Policies", "none"),
    ("Permissions-Policy", PERMISSIONS_POLICY),
)

#: Removed from every response (SEC-59). The server's own ``Server`` header is
#: switched off in the server configuration; this catches the application's.
REMOVED_HEADERS: Final = frozenset({b"server", b"x-powered-by"})

NO_STORE: Final = "no-store"

_CACHE_CONTROL: Final = b"cache-control"
_CSP: Final = b"content-security-policy"
_HSTS: Final = b"strict-transport-security"


def _encode(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs)


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """Which security headers a response gets.

    ``hsts_max_age``: seconds for ``Strict-Transport-Security`` on HTTPS responses
    (0 sends none). ``relaxed_csp_paths``: exact request paths (the docs pages)
    that get :data:`DOCS_CSP` instead of :data:`API_CSP`.
    """

    hsts_max_age: int = 63_072_000
    include_subdomains: bool = True
    relaxed_csp_paths: frozenset[str] = frozenset()
    _base: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)
    _hsts: tuple[bytes, bytes] | None = field(init=False, repr=False, compare=False)
    _owned: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.hsts_max_age < 0:
            raise ValueError("hsts_max_age must be >= 0")
        for path in self.relaxed_csp_paths:
            if not path.startswith("/"):
                raise ValueError("relaxed_csp_paths must be absolute paths")
        base = _encode(BASE_HEADERS)
        hsts: tuple[bytes, bytes] | None = None
        if self.hsts_max_age > 0:
            value = f"max-age={self.hsts_max_age}"
            if self.include_subdomains:
                value += "; includeSubDomains"
            hsts = (_HSTS, value.encode("latin-1"))
        owned = frozenset(name for name, _ in base) | {_CSP, _HSTS} | REMOVED_HEADERS
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_hsts", hsts)
        object.__setattr__(self, "_owned", owned)

    def csp_for(self, path: str) -> str:
        """The Content-Security-Policy for a request to ``path``."""
        return DOCS_CSP if path in self.relaxed_csp_paths else API_CSP

    def headers_for(self, *, path: str, https: bool) -> list[tuple[str, str]]:
        """The headers this policy sets on a response to ``path`` (for docs and tests)."""
        raw = self.apply([], path=path, https=https)
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]

    def apply(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        *,
        path: str,
        https: bool,
        no_store: bool = False,
    ) -> RawHeaders:
        """Return ``headers`` (lower- or mixed-case byte pairs) with the policy applied."""
        out: RawHeaders = []
        has_cache_control = False
        for name, value in headers:
            lname = name.lower()
            if lname in self._owned:
                continue
            if lname == _CACHE_CONTROL:
                if no_store:
                    continue
                has_cache_control = True
            out.append((lname, value))
        out.extend(self._base)
        out.append((_CSP, self.csp_for(path).encode("latin-1")))
        if https and self._hsts is not None:
            out.append(self._hsts)
        if not has_cache_control:
            out.append((_CACHE_CONTROL, NO_STORE.encode("latin-1")))
        return out
