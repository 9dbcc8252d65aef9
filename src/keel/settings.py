"""Typed settings read from the environment; no global instance.

Platform names come first (``DATABASE_URL``, ``REDIS_URL``, ``PORT``,
``WEB_CONCURRENCY``, ``SECRET_KEY``); everything else is under ``KEEL_``.
``Settings`` is built only by ``create_app``'s callers, ``runtime.server`` and
the CLI; every other module receives the one section it needs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Annotated, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keel._listen import DEFAULT_BIND, DEFAULT_PORT, ListenSettingError, parse_bind, parse_port

__all__ = [
    "AuditSettings",
    "CacheSettings",
    "CorsSettings",
    "DatabaseSettings",
    "HttpSettings",
    "LifecycleSettings",
    "MetricsSettings",
    "PasswordSettings",
    "ServerSettings",
    "SessionSettings",
    "Settings",
    "ThrottleSettings",
    "TokenSettings",
    "normalize_database_url",
]

Environment = Literal["development", "production"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

DEFAULT_DATABASE_URL = "sqlite:///./keel.sqlite3"
DEFAULT_STATE_FILE = "var/keel-state.sqlite3"
LOOPBACK_PROXIES = "127.0.0.1/32,::1/128"

_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalize_database_url(url: str) -> str:
    """Map the URL forms platforms hand out onto keel's async drivers.

    ``postgres://`` and ``postgresql://`` become ``postgresql+asyncpg://``,
    ``sqlite:///`` becomes ``sqlite+aiosqlite:///``. Raises ``ValueError`` for
    any other scheme.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("DATABASE_URL must look like scheme://...")
    driver = _ASYNC_DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError("DATABASE_URL scheme must be postgres, postgresql or sqlite")
    return f"{driver}://{rest}"


def _parse_keys(value: SecretStr) -> dict[str, SecretStr]:
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


def _state_file_beside(database_url: SecretStr) -> str:
    """Beside a SQLite database file (``<file>-state``); else ``DEFAULT_STATE_FILE``."""
    url = database_url.get_secret_value()
    scheme, _, rest = url.partition("://")
    if not scheme.startswith("sqlite"):
        return DEFAULT_STATE_FILE
    path = rest[1:].split("?", 1)[0] if rest.startswith("/") else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return DEFAULT_STATE_FILE
    return path + "-state"


def _with_sslmode(url: SecretStr, sslmode: str | None) -> SecretStr:
    """``url`` with ``sslmode`` added when it is PostgreSQL and names neither sslmode nor ssl."""
    raw = url.get_secret_value()
    parts = urlsplit(raw)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if sslmode is None or not parts.scheme.startswith("postgresql"):
        return url
    if any(key in {"sslmode", "ssl"} for key, _ in query):
        return url
    return SecretStr(urlunsplit(parts._replace(query=urlencode([*query, ("sslmode", sslmode)]))))


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """What ``keel.db`` needs."""

    url: SecretStr
    pool_size: int
    max_overflow: int
    pool_timeout: float
    connect_timeout: float
    echo: bool
    #: Importable packages of application revisions (``KEEL_MIGRATIONS``), run with keel's.
    migration_packages: tuple[str, ...] = ()

    @property
    def dialect(self) -> Literal["postgresql", "sqlite"]:
        return "sqlite" if self.url.get_secret_value().startswith("sqlite") else "postgresql"

    @property
    def host(self) -> str | None:
        return urlsplit(self.url.get_secret_value()).hostname

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url.get_secret_value()).query))

    def redacted_url(self) -> str:
        """The URL without its password, for messages."""
        parts = urlsplit(self.url.get_secret_value())
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
        query = urlencode(
            [
                (k, "***" if any(w in k.lower() for w in ("pass", "secret", "key", "token")) else v)
                for k, v in parse_qsl(parts.query)
            ]
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


# Used only in development when neither KEEL_AUDIT_KEY nor SECRET_KEY is set, so a
# local chain still verifies across restarts; production refuses it (keel.E013).
DEVELOPMENT_AUDIT_KEY = "keel-development-audit-key-never-use-in-production"


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """What ``keel.audit`` needs: the sealing key and every older key rows may name."""

    current_key_id: str
    keys: dict[str, SecretStr]
    is_development_key: bool


@dataclass(frozen=True, slots=True)
class PasswordSettings:
    """Password policy (NIST SP 800-63B-4) and hashing cost (OWASP argon2id)."""

    min_length: int
    max_length: int
    service_name: str
    argon2_memory_kib: int
    argon2_time_cost: int
    argon2_parallelism: int
    hash_concurrency: int


JwtAlgorithm = Literal["EdDSA", "ES256", "HS256"]


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """Access-token signing: algorithm, keys, issuer, audience, lifetime."""

    algorithm: JwtAlgorithm
    key_file: str | None
    private_key: SecretStr | None
    hmac_secret: SecretStr | None
    issuer: str
    audience: str
    access_ttl: int
    leeway: int


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Refresh-token sessions: lifetimes and the concurrent-refresh grace window (seconds)."""

    idle_ttl: int
    absolute_ttl: int
    refresh_grace: float


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

    enabled: bool
    account_failures: int
    account_base_delay: float
    account_max_delay: float
    account_failure_window: int
    account_ip_limit: int
    ip_limit: int
    global_limit: int
    window: int
    known_source_ttl: int
    ipv6_prefix_length: int = 64
    refresh_session_limit: int = 10
    mail_recipient_limit: int = 5


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """What ``keel.cache`` needs; ``cluster``: ``redis_url`` names a node of a Redis Cluster.

    ``state_file`` is the SQLite file every process of this machine shares:
    the store itself without ``REDIS_URL``, Redis's fallback with it.
    """

    redis_url: SecretStr | None
    timeout: float
    retry_interval: float
    namespace: str = "keel:"
    state_file: str = DEFAULT_STATE_FILE
    cluster: bool = False
    # rediss:// only: False accepts any certificate (Heroku Redis's self-signed one).
    tls_verify: bool = True
    degrade_after: float = 1.0


@dataclass(frozen=True, slots=True)
class CorsSettings:
    """The exact CORS allow-list."""

    origins: tuple[str, ...]
    allow_credentials: bool
    max_age: int


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What the HTTP edge needs."""

    trusted_proxies: tuple[IPNetwork, ...]
    trust_all_proxies: bool
    max_body_bytes: int
    max_auth_body_bytes: int
    max_json_members: int
    max_json_depth: int
    request_timeout: float
    hsts_max_age: int
    docs_enabled: bool
    cors: CorsSettings
    #: Refuse what a trusted proxy forwarded from plain HTTP (SEC-60): production.
    require_https: bool = False


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    """What the lifespan supervisor needs."""

    warmup_timeout: float
    warmup_budget: float
    shutdown_timeout: float
    readiness_timeout: float


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """What the Prometheus metrics need (``keel.metrics``)."""

    enabled: bool
    token: SecretStr | None
    #: gunicorn's multiprocess directory, emptied when the master starts; None: the
    #: runtime's default for this deployment (``keel.runtime.metrics_hooks``).
    directory: str | None


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What the gunicorn runtime needs."""

    bind: str
    port: int
    workers: int | None
    timeout: int
    graceful_timeout: int
    keepalive: int
    max_requests: int
    max_requests_jitter: int
    max_header_fields: int
    max_header_bytes: int
    trusted_proxies: tuple[str, ...]
    log_level: LogLevel
    reload: bool
    #: Seconds a worker keeps serving after SIGTERM with /readyz at 503 (``KEEL_DRAIN_SECONDS``).
    drain_seconds: float = 0.0


#: A worker's drain after SIGTERM in production when ``KEEL_DRAIN_SECONDS`` is unset: about
#: one health-check interval of a load balancer (nginx, HAProxy, cloud balancers: 2-10 s).
DEFAULT_PRODUCTION_DRAIN: Final = 5.0


class Settings(BaseSettings):
    """All of keel's configuration, validated once at start."""

    model_config = SettingsConfigDict(
        env_prefix="KEEL_",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # Platform names first.
    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
    )
    redis_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "redis_url")
    )
    port: int = Field(default=DEFAULT_PORT, validation_alias=AliasChoices("PORT", "port"))
    web_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=256,
        validation_alias=AliasChoices("WEB_CONCURRENCY", "web_concurrency"),
    )
    secret_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SECRET_KEY", "secret_key")
    )

    # keel's own, under KEEL_.
    env: Environment = "development"
    debug: bool = False
    reload: bool = False
    bind: str = DEFAULT_BIND
    public_url: str | None = None
    log_level: LogLevel = "INFO"
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: LOOPBACK_PROXIES.split(",")
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    cors_max_age: int = Field(default=600, ge=0, le=86400)
    docs: bool | None = None
    docs_in_production: bool = False
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_auth_body_bytes: int = Field(default=32_768, ge=1024)
    max_json_members: int = Field(default=256, ge=16, le=100_000)
    max_json_depth: int = Field(default=32, ge=4, le=1000)
    request_timeout: float = Field(default=30.0, gt=0)
    hsts_max_age: int = Field(default=63_072_000, ge=0)

    db_pool_size: int = Field(default=5, ge=1, le=100)
    db_max_overflow: int = Field(default=5, ge=0, le=100)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    db_connect_timeout: float = Field(default=5.0, gt=0)
    db_echo: bool = False
    # Added to a PostgreSQL DATABASE_URL that names no sslmode (platforms hand out such URLs).
    database_sslmode: SslMode | None = None
    migrations: Annotated[list[str], NoDecode] = Field(default_factory=list)

    service_name: str = Field(default="keel", min_length=1, max_length=64)
    require_verified_email: bool = True

    mail_backend: Literal["console", "file", "smtp"] = "console"
    mail_from: str | None = Field(default=None, max_length=320)
    mail_file: str | None = None
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout: float = Field(default=10.0, gt=0, le=120)
    # The durable mail outbox (keel.accounts.outbox).
    mail_poll_interval: float = Field(default=5.0, gt=0, le=3600)
    mail_max_attempts: int = Field(default=8, ge=1, le=100)
    mail_retry_base: float = Field(default=2.0, gt=0, le=3600)
    mail_retry_max: float = Field(default=900.0, gt=0, le=24 * 3600)
    mail_lease: float = Field(default=120.0, ge=1, le=3600)
    mail_sender_enabled: bool = True
    password_min_length: int = Field(default=15, ge=8, le=64)
    password_max_length: int = Field(default=1024, ge=64, le=4096)
    argon2_memory_kib: int = Field(default=19_456, ge=19_456, le=1_048_576)
    argon2_time_cost: int = Field(default=2, ge=2, le=20)
    argon2_parallelism: int = Field(default=1, ge=1, le=16)
    hash_concurrency: int = Field(default=1, ge=1, le=16)

    jwt_algorithm: JwtAlgorithm = "EdDSA"
    jwt_key_file: str | None = None
    jwt_private_key: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    jwt_issuer: str | None = None
    jwt_audience: str = Field(default="keel", min_length=1, max_length=256)
    access_token_ttl: int = Field(default=900, ge=30, le=900)
    jwt_leeway: int = Field(default=30, ge=0, le=60)

    session_idle_ttl: int = Field(default=3600, ge=60, le=30 * 24 * 3600)
    session_absolute_ttl: int = Field(default=24 * 3600, ge=300, le=365 * 24 * 3600)
    refresh_grace_seconds: float = Field(default=5.0, ge=0, le=60)
    password_reset_ttl: int = Field(default=3600, ge=300, le=3600)
    # Housekeeping (keel.api.housekeeping): 0 turns the loop off.
    housekeeping_interval: int = Field(default=3600, ge=0, le=7 * 24 * 3600)
    housekeeping_budget: float = Field(default=5.0, gt=0, le=600)
    ended_retention: int = Field(default=7 * 24 * 3600, ge=0, le=365 * 24 * 3600)
    # Seconds; see keel.accounts.pacing.
    enumeration_floor: float = Field(default=0.25, ge=0, le=5)
    failed_login_floor: float = Field(default=0.35, ge=0, le=5)

    throttle_enabled: bool = True
    lockout_threshold: int = Field(default=10, ge=3, le=100)
    lockout_base_delay: float = Field(default=30.0, gt=0, le=3600)
    lockout_max_delay: float = Field(default=900.0, gt=0, le=24 * 3600)
    lockout_window: int = Field(default=12 * 3600, ge=60, le=7 * 24 * 3600)
    rate_limit_account_ip: int = Field(default=20, ge=1, le=10_000)
    rate_limit_ip: int = Field(default=50, ge=1, le=100_000)
    rate_limit_global: int = Field(default=5_000, ge=1, le=10_000_000)
    rate_limit_window: int = Field(default=60, ge=1, le=3600)
    known_source_ttl: int = Field(default=30 * 24 * 3600, ge=3600, le=365 * 24 * 3600)
    ipv6_prefix_length: int = Field(default=64, ge=32, le=128)
    rate_limit_refresh_session: int = Field(default=10, ge=1, le=10_000)
    mail_recipient_limit: int = Field(default=5, ge=1, le=1000)

    audit_key: SecretStr | None = None
    audit_key_id: str = Field(default="k1", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    audit_previous_keys: SecretStr | None = None

    # No braces, ever: on a Redis Cluster a "{" in the prefix would make the
    # prefix every key's hash tag (the whole cache in one slot) or break the
    # tags keys carry ("user:{42}:...") for keys read together.
    cache_namespace: str = Field(default="keel:", pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    cache_timeout: float = Field(default=0.25, gt=0)
    cache_retry_interval: float = Field(default=1.0, gt=0)
    cache_degrade_after: float = Field(default=1.0, ge=0, le=60)
    state_file: str | None = Field(default=None, min_length=1, max_length=4096)
    single_instance: bool = False
    redis_cluster: bool = False
    redis_tls_verify: bool = True

    warmup_timeout: float = Field(default=2.0, gt=0)
    warmup_budget: float = Field(default=120.0, gt=0)
    shutdown_timeout: float = Field(default=5.0, gt=0)
    readiness_timeout: float = Field(default=1.0, gt=0)

    timeout: int = Field(default=30, ge=1)
    graceful_timeout: int = Field(default=30, ge=2)
    # None: 5 s in production (a load balancer's health-check interval), 0 in development.
    drain_seconds: float | None = Field(default=None, ge=0, le=300)
    keepalive: int = Field(default=75, ge=1)
    max_requests: int = Field(default=0, ge=0)
    max_requests_jitter: int = Field(default=0, ge=0)
    max_header_fields: int = Field(default=100, ge=1, le=10_000)
    max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)

    # Prometheus metrics: collected unless KEEL_METRICS=false, served only with a token.
    metrics_enabled: bool = Field(
        default=True, validation_alias=AliasChoices("KEEL_METRICS", "metrics_enabled")
    )
    metrics_token: SecretStr | None = None
    # None: one directory per deployment (keel.runtime.metrics_hooks.deployment_directory).
    metrics_dir: str | None = Field(default=None, min_length=1, max_length=4096)

    @field_validator("web_concurrency", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("bind", "port", mode="before")
    @classmethod
    def _listen(cls, value: object, info: ValidationInfo) -> object:
        try:
            if info.field_name == "port":
                return parse_port(value)
            return parse_bind(value) if isinstance(value, str) else value
        except ListenSettingError as exc:
            # The type carries the finding id, the context its hint (keel.checks.load_settings).
            raise PydanticCustomError(
                f"keel.{exc.finding_id}", exc.message, {"hint": exc.hint}
            ) from None

    @field_validator("trusted_proxies", "cors_origins", "migrations", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("migrations", mode="after")
    @classmethod
    def _migrations(cls, value: list[str]) -> list[str]:
        for name in value:
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(
                    f"{name!r} is not an importable package name (like myapp.migrations)"
                )
        return value

    @field_validator("database_url", mode="after")
    @classmethod
    def _database_url(cls, value: SecretStr) -> SecretStr:
        return SecretStr(normalize_database_url(value.get_secret_value()))

    @field_validator("secret_key", mode="after")
    @classmethod
    def _secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @field_validator(
        "audit_key",
        "audit_previous_keys",
        "jwt_private_key",
        "jwt_secret",
        "metrics_token",
        mode="after",
    )
    @classmethod
    def _optional_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @field_validator("audit_previous_keys", mode="after")
    @classmethod
    def _previous_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _parse_keys(value)
        return value

    @field_validator("redis_url", mode="after")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        scheme = value.get_secret_value().partition("://")[0].lower()
        if scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("REDIS_URL scheme must be redis, rediss or unix")
        return value

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry != "*":
                ipaddress.ip_network(entry, strict=False)
        return value

    @field_validator("cors_origins", mode="after")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError("CORS origins must be scheme://host[:port]")
            if parts.path not in {"", "/"} or parts.query or parts.fragment or "@" in parts.netloc:
                raise ValueError("CORS origins must be scheme://host[:port] with nothing else")
        return [origin.rstrip("/") for origin in value]

    @field_validator("public_url", mode="after")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("KEEL_PUBLIC_URL must be an absolute http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _session_lifetimes(self) -> Settings:
        if self.session_idle_ttl > self.session_absolute_ttl:
            raise ValueError("KEEL_SESSION_IDLE_TTL must not exceed KEEL_SESSION_ABSOLUTE_TTL")
        return self

    # Sections handed to the layers below.

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def database(self) -> DatabaseSettings:
        return DatabaseSettings(
            url=_with_sslmode(self.database_url, self.database_sslmode),
            pool_size=self.db_pool_size,
            max_overflow=self.db_max_overflow,
            pool_timeout=self.db_pool_timeout,
            connect_timeout=self.db_connect_timeout,
            echo=self.db_echo,
            migration_packages=tuple(self.migrations),
        )

    @property
    def passwords(self) -> PasswordSettings:
        return PasswordSettings(
            min_length=self.password_min_length,
            max_length=self.password_max_length,
            service_name=self.service_name,
            argon2_memory_kib=self.argon2_memory_kib,
            argon2_time_cost=self.argon2_time_cost,
            argon2_parallelism=self.argon2_parallelism,
            hash_concurrency=self.hash_concurrency,
        )

    @property
    def tokens(self) -> TokenSettings:
        return TokenSettings(
            algorithm=self.jwt_algorithm,
            key_file=self.jwt_key_file,
            private_key=self.jwt_private_key,
            hmac_secret=self.jwt_secret,
            issuer=self.jwt_issuer or self.public_url or "keel",
            audience=self.jwt_audience,
            access_ttl=self.access_token_ttl,
            leeway=self.jwt_leeway,
        )

    @property
    def audit(self) -> AuditSettings:
        keys: dict[str, SecretStr] = {}
        if self.audit_previous_keys is not None:
            keys.update(_parse_keys(self.audit_previous_keys))
        development = False
        if self.audit_key is not None:
            current = self.audit_key
        elif self.secret_key is not None:
            # Derived, so that one secret is enough to start; production still wants its own.
            current = SecretStr(
                hmac.new(
                    self.secret_key.get_secret_value().encode(), b"keel-audit-key", hashlib.sha256
                ).hexdigest()
            )
        else:
            current, development = SecretStr(DEVELOPMENT_AUDIT_KEY), True
        keys[self.audit_key_id] = current
        return AuditSettings(
            current_key_id=self.audit_key_id, keys=keys, is_development_key=development
        )

    @property
    def sessions(self) -> SessionSettings:
        return SessionSettings(
            idle_ttl=self.session_idle_ttl,
            absolute_ttl=self.session_absolute_ttl,
            refresh_grace=self.refresh_grace_seconds,
        )

    @property
    def throttle(self) -> ThrottleSettings:
        return ThrottleSettings(
            enabled=self.throttle_enabled,
            account_failures=self.lockout_threshold,
            account_base_delay=self.lockout_base_delay,
            account_max_delay=self.lockout_max_delay,
            account_failure_window=self.lockout_window,
            account_ip_limit=self.rate_limit_account_ip,
            ip_limit=self.rate_limit_ip,
            global_limit=self.rate_limit_global,
            window=self.rate_limit_window,
            known_source_ttl=self.known_source_ttl,
            ipv6_prefix_length=self.ipv6_prefix_length,
            refresh_session_limit=self.rate_limit_refresh_session,
            mail_recipient_limit=self.mail_recipient_limit,
        )

    @property
    def cache(self) -> CacheSettings:
        return CacheSettings(
            redis_url=self.redis_url,
            timeout=self.cache_timeout,
            retry_interval=self.cache_retry_interval,
            namespace=self.cache_namespace,
            state_file=self.state_file or _state_file_beside(self.database_url),
            cluster=self.redis_cluster,
            tls_verify=self.redis_tls_verify,
            degrade_after=self.cache_degrade_after,
        )

    @property
    def http(self) -> HttpSettings:
        networks = tuple(
            ipaddress.ip_network(entry, strict=False)
            for entry in self.trusted_proxies
            if entry != "*"
        )
        docs = self.docs if self.docs is not None else not self.is_production
        return HttpSettings(
            trusted_proxies=networks,
            trust_all_proxies="*" in self.trusted_proxies,
            max_body_bytes=self.max_body_bytes,
            max_auth_body_bytes=min(self.max_auth_body_bytes, self.max_body_bytes),
            max_json_members=self.max_json_members,
            max_json_depth=self.max_json_depth,
            request_timeout=self.request_timeout,
            hsts_max_age=self.hsts_max_age,
            docs_enabled=docs,
            require_https=self.is_production,
            cors=CorsSettings(
                origins=tuple(self.cors_origins),
                allow_credentials=self.cors_allow_credentials,
                max_age=self.cors_max_age,
            ),
        )

    @property
    def lifecycle(self) -> LifecycleSettings:
        return LifecycleSettings(
            warmup_timeout=self.warmup_timeout,
            warmup_budget=self.warmup_budget,
            shutdown_timeout=self.shutdown_timeout,
            readiness_timeout=self.readiness_timeout,
        )

    @property
    def server(self) -> ServerSettings:
        return ServerSettings(
            bind=self.bind,
            port=self.port,
            workers=self.web_concurrency,
            timeout=self.timeout,
            graceful_timeout=self.graceful_timeout,
            keepalive=self.keepalive,
            max_requests=self.max_requests,
            max_requests_jitter=self.max_requests_jitter,
            max_header_fields=self.max_header_fields,
            max_header_bytes=self.max_header_bytes,
            trusted_proxies=tuple(self.trusted_proxies),
            log_level=self.log_level,
            reload=self.reload,
            drain_seconds=self.effective_drain_seconds,
        )

    @property
    def metrics(self) -> MetricsSettings:
        return MetricsSettings(
            enabled=self.metrics_enabled,
            token=self.metrics_token,
            directory=self.metrics_dir,
        )

    @property
    def effective_drain_seconds(self) -> float:
        """``KEEL_DRAIN_SECONDS``, or its default: 5 s in production, none in development."""
        if self.drain_seconds is not None:
            return self.drain_seconds
        return DEFAULT_PRODUCTION_DRAIN if self.is_production else 0.0
