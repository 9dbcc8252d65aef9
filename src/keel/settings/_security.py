"""Security settings: the audit key, passwords, access tokens, sessions and the throttle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, SecretStr

from keel.settings._declare import derived, env

__all__ = [
    "DEVELOPMENT_AUDIT_KEY",
    "AuditSettings",
    "JwtAlgorithm",
    "PasswordSettings",
    "Secret",
    "SessionSettings",
    "ThrottleSettings",
    "TokenSettings",
    "parse_keys",
]

JwtAlgorithm = Literal["EdDSA", "ES256", "HS256"]

_DAY = 24 * 3600
_YEAR = 365 * _DAY

# Used only in development when neither KEEL_AUDIT_KEY nor SECRET_KEY is set, so a
# local chain still verifies across restarts; production refuses it (keel.E013).
DEVELOPMENT_AUDIT_KEY = "keel-development-audit-key-never-use-in-production"


def parse_keys(value: SecretStr) -> dict[str, SecretStr]:
    """``kid:key,kid:key`` → mapping; raises ``ValueError`` naming only the bad key id."""
    keys: dict[str, SecretStr] = {}
    for entry in value.get_secret_value().split(","):
        if not entry.strip():
            continue
        key_id, sep, key = entry.strip().partition(":")
        if not sep or not key_id or len(key) < 32:
            raise ValueError("KEEL_AUDIT_PREVIOUS_KEYS must be kid:key pairs, keys ≥ 32 chars")
        keys[key_id] = SecretStr(key)
    return keys


def blank_is_none(value: SecretStr | None) -> SecretStr | None:
    """A secret of blanks is no secret: unset."""
    if value is None or not value.get_secret_value().strip():
        return None
    return value


def _previous_keys(value: SecretStr | None) -> SecretStr | None:
    value = blank_is_none(value)
    if value is not None:
        parse_keys(value)
    return value


Secret = Annotated[SecretStr | None, AfterValidator(blank_is_none)]


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """What ``keel.audit`` needs: the sealing key and every older key rows may name.

    ``keys`` (every key by id, the current one under ``current_key_id``) and
    ``is_development_key`` are derived by ``Settings`` from ``KEEL_AUDIT_KEY``,
    ``SECRET_KEY`` and ``KEEL_AUDIT_PREVIOUS_KEYS``.
    """

    current_key_id: Annotated[str, env("KEEL_AUDIT_KEY_ID", pattern=r"^[A-Za-z0-9._-]{1,32}$")] = (
        "k1"
    )
    keys: dict[str, SecretStr] = derived(default_factory=dict)  # noqa: RUF009 - a field()
    is_development_key: bool = derived(False)
    key: Annotated[Secret, env("KEEL_AUDIT_KEY")] = None
    previous_keys: Annotated[
        SecretStr | None, env("KEEL_AUDIT_PREVIOUS_KEYS"), AfterValidator(_previous_keys)
    ] = None


@dataclass(frozen=True, slots=True)
class PasswordSettings:
    """Password policy (NIST SP 800-63B-4) and hashing cost (OWASP argon2id).

    ``service_name`` (``KEEL_SERVICE_NAME``, a word no password may be built on)
    is copied in by ``Settings``.
    """

    min_length: Annotated[int, env("KEEL_PASSWORD_MIN_LENGTH", ge=8, le=64)] = 15
    max_length: Annotated[int, env("KEEL_PASSWORD_MAX_LENGTH", ge=64, le=4096)] = 1024
    service_name: str = derived("keel")
    argon2_memory_kib: Annotated[int, env("KEEL_ARGON2_MEMORY_KIB", ge=19_456, le=1_048_576)] = (
        19_456
    )
    argon2_time_cost: Annotated[int, env("KEEL_ARGON2_TIME_COST", ge=2, le=20)] = 2
    argon2_parallelism: Annotated[int, env("KEEL_ARGON2_PARALLELISM", ge=1, le=16)] = 1
    hash_concurrency: Annotated[int, env("KEEL_HASH_CONCURRENCY", ge=1, le=16)] = 1


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """Access-token signing: algorithm, keys, issuer, audience, lifetime.

    ``issuer`` unset (empty) becomes ``KEEL_PUBLIC_URL``, else ``keel``, when
    ``Settings`` is built.
    """

    algorithm: Annotated[JwtAlgorithm, env("KEEL_JWT_ALGORITHM")] = "EdDSA"
    key_file: Annotated[str | None, env("KEEL_JWT_KEY_FILE")] = None
    private_key: Annotated[Secret, env("KEEL_JWT_PRIVATE_KEY")] = None
    hmac_secret: Annotated[Secret, env("KEEL_JWT_SECRET")] = None
    issuer: Annotated[str, env("KEEL_JWT_ISSUER")] = ""
    audience: Annotated[str, env("KEEL_JWT_AUDIENCE", min_length=1, max_length=256)] = "keel"
    access_ttl: Annotated[int, env("KEEL_ACCESS_TOKEN_TTL", ge=30, le=900)] = 900
    leeway: Annotated[int, env("KEEL_JWT_LEEWAY", ge=0, le=60)] = 30


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Refresh-token sessions: lifetimes and the concurrent-refresh grace window (seconds)."""

    idle_ttl: Annotated[int, env("KEEL_SESSION_IDLE_TTL", ge=60, le=30 * _DAY)] = 3600
    absolute_ttl: Annotated[int, env("KEEL_SESSION_ABSOLUTE_TTL", ge=300, le=_YEAR)] = _DAY
    refresh_grace: Annotated[float, env("KEEL_REFRESH_GRACE_SECONDS", ge=0, le=60)] = 5.0


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """Brute-force and rate limits on the authentication endpoints (SEC-13..SEC-16).

    - ``account_failures``: consecutive failures on one account (from sources it
      has not recently logged in from) before each further attempt waits
      ``account_base_delay * 2 ** (failures - threshold)`` seconds, capped at
      ``account_max_delay``; the count forgets after ``account_failure_window``.
    - ``account_ip_limit`` failures per (account, IP) per ``window``.
    - ``ip_limit`` attempts per IP and ``global_limit`` attempts in all per ``window``.
    - ``known_source_ttl``: how long a source an account logged in from stays "known".
    - ``ipv6_prefix_length``: an IPv6 client is counted by its network of this many bits.
    - ``refresh_session_limit``: refreshes of one session per ``window``.
    - ``mail_recipient_limit``: mails to one address per hour (sliding).
    """

    enabled: Annotated[bool, env("KEEL_THROTTLE_ENABLED")] = True
    account_failures: Annotated[int, env("KEEL_LOCKOUT_THRESHOLD", ge=3, le=100)] = 10
    account_base_delay: Annotated[float, env("KEEL_LOCKOUT_BASE_DELAY", gt=0, le=3600)] = 30.0
    account_max_delay: Annotated[float, env("KEEL_LOCKOUT_MAX_DELAY", gt=0, le=_DAY)] = 900.0
    account_failure_window: Annotated[int, env("KEEL_LOCKOUT_WINDOW", ge=60, le=7 * _DAY)] = (
        12 * 3600
    )
    account_ip_limit: Annotated[int, env("KEEL_RATE_LIMIT_ACCOUNT_IP", ge=1, le=10_000)] = 20
    ip_limit: Annotated[int, env("KEEL_RATE_LIMIT_IP", ge=1, le=100_000)] = 50
    global_limit: Annotated[int, env("KEEL_RATE_LIMIT_GLOBAL", ge=1, le=10_000_000)] = 5_000
    window: Annotated[int, env("KEEL_RATE_LIMIT_WINDOW", ge=1, le=3600)] = 60
    known_source_ttl: Annotated[int, env("KEEL_KNOWN_SOURCE_TTL", ge=3600, le=_YEAR)] = 30 * _DAY
    ipv6_prefix_length: Annotated[int, env("KEEL_IPV6_PREFIX_LENGTH", ge=32, le=128)] = 64
    refresh_session_limit: Annotated[
        int, env("KEEL_RATE_LIMIT_REFRESH_SESSION", ge=1, le=10_000)
    ] = 10
    mail_recipient_limit: Annotated[int, env("KEEL_MAIL_RECIPIENT_LIMIT", ge=1, le=1000)] = 5
