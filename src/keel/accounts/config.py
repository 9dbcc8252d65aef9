"""``AccountSettings``: what ``AccountService`` needs from ``keel.settings.Settings``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from keel.accounts.roles import KNOWN_ROLES
from keel.errors import ConfigurationError
from keel.settings import Settings

__all__ = [
    "PASSWORD_RESET_TTL",
    "PASSWORD_RESET_TTL_MAX",
    "VERIFICATION_TTL",
    "AccountSettings",
    "account_settings_from",
]

#: How long an e-mail verification link works (seconds).
VERIFICATION_TTL: Final = 24 * 3600
#: How long a password-reset link works by default, and at most (SEC-25: one hour).
PASSWORD_RESET_TTL: Final = 3600
PASSWORD_RESET_TTL_MAX: Final = 3600


@dataclass(frozen=True, slots=True)
class AccountSettings:
    """Account rules: where links point, whether login needs a verified address, link lifetimes.

    ``lockout_threshold`` is the number of consecutive failures at which the
    login guard starts refusing an account (``KEEL_LOCKOUT_THRESHOLD``); the
    service audits ``authn_login_fail_max`` when a failure reaches it. The two
    floors (seconds, 0 for none) are described in :mod:`keel.accounts.pacing`.
    """

    service_name: str
    public_url: str
    require_verified_email: bool = True
    verification_ttl: int = VERIFICATION_TTL
    password_reset_ttl: int = PASSWORD_RESET_TTL
    lockout_threshold: int | None = None
    enumeration_floor: float = 0.0
    failed_login_floor: float = 0.0
    #: Role names an admin may give: keel's and the application's (``create_app(roles=...)``).
    known_roles: frozenset[str] = KNOWN_ROLES

    def __post_init__(self) -> None:
        if not self.public_url.startswith(("https://", "http://")):
            raise ConfigurationError("KEEL_PUBLIC_URL must be an absolute http(s) URL")
        if self.verification_ttl <= 0:
            raise ConfigurationError("the verification link lifetime must be positive")
        if not 0 < self.password_reset_ttl <= PASSWORD_RESET_TTL_MAX:
            raise ConfigurationError("KEEL_PASSWORD_RESET_TTL must be between 1 and 3600 seconds")
        if self.enumeration_floor < 0 or self.failed_login_floor < 0:
            raise ConfigurationError("a response floor cannot be negative")

    def link(self, path: str, token: str) -> str:
        """A link for mail: always on ``public_url``, never on a request's Host (SEC-26).

        The token travels in the fragment, which browsers never send to a
        server: it stays out of access logs, proxies and ``Referer`` headers.
        """
        return f"{self.public_url.rstrip('/')}{path}#token={token}"


def account_settings_from(settings: Settings) -> AccountSettings:
    """``AccountSettings`` from a ``Settings`` object.

    ``KEEL_PUBLIC_URL`` is required in production (links in mail must point
    at the real site); in development it defaults to the local server.
    """
    public_url = settings.public_url
    if not public_url:
        if settings.is_production:
            raise ConfigurationError(
                "KEEL_PUBLIC_URL must be set in production: links in account mail point at it"
            )
        public_url = f"http://localhost:{settings.server.port}"
    accounts = settings.accounts
    return AccountSettings(
        service_name=settings.service_name,
        public_url=public_url,
        require_verified_email=accounts.require_verified_email,
        password_reset_ttl=accounts.password_reset_ttl,
        lockout_threshold=settings.throttle.account_failures,
        enumeration_floor=accounts.enumeration_floor,
        failed_login_floor=accounts.failed_login_floor,
    )
