"""``AccountSettings``: what ``AccountService`` needs from ``keel.settings.Settings``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from keel.accounts.roles import KNOWN_ROLES
from keel.errors import ConfigurationError
from keel.settings import AccountPolicySettings, Settings

__all__ = [
    "VERIFICATION_TTL",
    "AccountSettings",
    "account_settings_from",
]

#: How long an e-mail verification link works (seconds); not a setting.
VERIFICATION_TTL: Final = 24 * 3600


@dataclass(frozen=True, slots=True)
class AccountSettings:
    """Account rules: where links point, the account policy, the lockout threshold, the roles.

    What it adds to the settings' sections is what is worked out from several
    of them: ``public_url`` (``KEEL_PUBLIC_URL``, or the local server in
    development), ``known_roles`` and the verification link's lifetime.
    ``policy`` is the settings' ``accounts`` section itself (whether login
    needs a verified address, the reset link's lifetime, the response floors
    described in :mod:`keel.accounts.pacing`): its defaults and bounds are
    declared there, once. ``lockout_threshold`` is the number of consecutive
    failures at which the login guard starts refusing an account
    (``KEEL_LOCKOUT_THRESHOLD``); the service audits ``authn_login_fail_max``
    when a failure reaches it, and never without a threshold.
    """

    service_name: str
    public_url: str
    policy: AccountPolicySettings = field(default_factory=AccountPolicySettings)
    lockout_threshold: int | None = None
    verification_ttl: int = VERIFICATION_TTL
    #: Role names an admin may give: keel's and the application's (``create_app(roles=...)``).
    known_roles: frozenset[str] = KNOWN_ROLES

    def __post_init__(self) -> None:
        if not self.public_url.startswith(("https://", "http://")):
            raise ConfigurationError("KEEL_PUBLIC_URL must be an absolute http(s) URL")
        if self.verification_ttl <= 0:
            raise ConfigurationError("the verification link lifetime must be positive")

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
    return AccountSettings(
        service_name=settings.service_name,
        public_url=public_url,
        policy=settings.accounts,
        lockout_threshold=settings.throttle.account_failures,
    )
