"""What accounts need from the configuration: mail delivery, account rules, housekeeping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, SecretStr

from keel.settings._declare import env

__all__ = ["AccountPolicySettings", "HousekeepingSettings", "MailSettings"]

_DAY = 24 * 3600
_YEAR = 365 * _DAY


@dataclass(frozen=True, slots=True)
class MailSettings:
    """How account mail leaves: ``console`` (logged), ``file`` (JSON Lines) or ``smtp``."""

    backend: Annotated[Literal["console", "file", "smtp"], env("KEEL_MAIL_BACKEND")] = "console"
    sender: Annotated[Annotated[str, Field(max_length=320)] | None, env("KEEL_MAIL_FROM")] = None
    file: Annotated[str | None, env("KEEL_MAIL_FILE")] = None
    smtp_host: Annotated[str, env("KEEL_SMTP_HOST")] = "localhost"
    smtp_port: Annotated[int, env("KEEL_SMTP_PORT", ge=1, le=65535)] = 587
    smtp_security: Annotated[Literal["starttls", "tls", "none"], env("KEEL_SMTP_SECURITY")] = (
        "starttls"
    )
    smtp_username: Annotated[str | None, env("KEEL_SMTP_USERNAME")] = None
    smtp_password: Annotated[SecretStr | None, env("KEEL_SMTP_PASSWORD")] = None
    smtp_timeout: Annotated[float, env("KEEL_SMTP_TIMEOUT", gt=0, le=120)] = 10.0
    # The durable outbox (keel.accounts.outbox): polling, retries with backoff, the claim lease.
    poll_interval: Annotated[float, env("KEEL_MAIL_POLL_INTERVAL", gt=0, le=3600)] = 5.0
    max_attempts: Annotated[int, env("KEEL_MAIL_MAX_ATTEMPTS", ge=1, le=100)] = 8
    retry_base: Annotated[float, env("KEEL_MAIL_RETRY_BASE", gt=0, le=3600)] = 2.0
    retry_max: Annotated[float, env("KEEL_MAIL_RETRY_MAX", gt=0, le=_DAY)] = 900.0
    lease: Annotated[float, env("KEEL_MAIL_LEASE", ge=1, le=3600)] = 120.0
    #: False: this instance writes mail to the outbox but leaves sending to the others.
    sender_enabled: Annotated[bool, env("KEEL_MAIL_SENDER_ENABLED")] = True


@dataclass(frozen=True, slots=True)
class AccountPolicySettings:
    """Account rules: verified e-mail for login, the reset link's life, the response floors.

    The floors (seconds, 0 for none) are described in :mod:`keel.accounts.pacing`.
    """

    require_verified_email: Annotated[bool, env("KEEL_REQUIRE_VERIFIED_EMAIL")] = True
    password_reset_ttl: Annotated[int, env("KEEL_PASSWORD_RESET_TTL", ge=300, le=3600)] = 3600
    enumeration_floor: Annotated[float, env("KEEL_ENUMERATION_FLOOR", ge=0, le=5)] = 0.25
    failed_login_floor: Annotated[float, env("KEEL_FAILED_LOGIN_FLOOR", ge=0, le=5)] = 0.35


@dataclass(frozen=True, slots=True)
class HousekeepingSettings:
    """The pruning rounds (``keel.api.housekeeping``, ``keel db prune``); interval 0: off."""

    interval: Annotated[int, env("KEEL_HOUSEKEEPING_INTERVAL", ge=0, le=7 * _DAY)] = 3600
    budget: Annotated[float, env("KEEL_HOUSEKEEPING_BUDGET", gt=0, le=600)] = 5.0
    ended_retention: Annotated[int, env("KEEL_ENDED_RETENTION", ge=0, le=_YEAR)] = 7 * _DAY
