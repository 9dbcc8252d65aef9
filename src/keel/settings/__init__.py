"""Typed settings read from the environment; no global instance.

Platform names come first (``DATABASE_URL``, ``REDIS_URL``, ``PORT``,
``WEB_CONCURRENCY``, ``SECRET_KEY``); everything else is under ``KEEL_``.
Each setting is declared once, as a field of the section that uses it (see
``keel.settings._declare``); ``Settings`` composes the sections and computes,
once, the values that depend on several settings. ``Settings`` is built only
by ``create_app``'s callers, ``runtime.server`` and the CLI; every other module
receives the one section it needs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import ipaddress
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from keel.settings._accounts import AccountPolicySettings, HousekeepingSettings, MailSettings
from keel.settings._declare import EnvSource, declared, flat_name, is_section
from keel.settings._declare import env as _env
from keel.settings._edge import (
    DEFAULT_PRODUCTION_DRAIN,
    CorsSettings,
    HttpSettings,
    LifecycleSettings,
    ServerSettings,
)
from keel.settings._metrics import MetricsSettings
from keel.settings._security import (
    DEVELOPMENT_AUDIT_KEY,
    AuditSettings,
    JwtAlgorithm,
    PasswordSettings,
    SessionSettings,
    ThrottleSettings,
    TokenSettings,
    blank_is_none,
    parse_keys,
)
from keel.settings._storage import (
    DEFAULT_DATABASE_URL,
    CacheSettings,
    DatabaseSettings,
    normalize_database_url,
    state_file_beside,
)

__all__ = [
    "AccountPolicySettings",
    "AuditSettings",
    "CacheSettings",
    "CorsSettings",
    "DatabaseSettings",
    "HousekeepingSettings",
    "HttpSettings",
    "JwtAlgorithm",
    "LifecycleSettings",
    "MailSettings",
    "MetricsSettings",
    "PasswordSettings",
    "ServerSettings",
    "SessionSettings",
    "Settings",
    "ThrottleSettings",
    "TokenSettings",
    "normalize_database_url",
    "variables",
]

Environment = Literal["development", "production"]


def _public_url(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("KEEL_PUBLIC_URL must be an absolute http(s) URL")
    return value.rstrip("/")


def _text(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


class Settings(BaseSettings):
    """All of keel's configuration, validated once at start.

    Built from the environment (each section's variables) and from keyword
    arguments, by flat name (``Settings(session_idle_ttl=60)``) or variable
    (``Settings(KEEL_SESSION_IDLE_TTL=60)``), or a whole section
    (``Settings(cache=CacheSettings(...))``); a keyword wins over the environment.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    env: Annotated[Environment, _env("KEEL_ENV")] = "development"
    debug: Annotated[bool, _env("KEEL_DEBUG")] = False
    secret_key: Annotated[SecretStr | None, _env("SECRET_KEY"), AfterValidator(blank_is_none)] = (
        None
    )
    #: The URL users reach keel at (mailed links are built from it).
    public_url: Annotated[str | None, _env("KEEL_PUBLIC_URL"), AfterValidator(_public_url)] = None
    #: The name in mail, and a word no password may be built on.
    service_name: Annotated[str, _env("KEEL_SERVICE_NAME", min_length=1, max_length=64)] = "keel"

    database: DatabaseSettings = DatabaseSettings()
    cache: CacheSettings = CacheSettings()
    server: ServerSettings = ServerSettings()
    http: HttpSettings = HttpSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    tokens: TokenSettings = TokenSettings()
    sessions: SessionSettings = SessionSettings()
    throttle: ThrottleSettings = ThrottleSettings()
    passwords: PasswordSettings = PasswordSettings()
    audit: AuditSettings = AuditSettings()
    mail: MailSettings = MailSettings()
    accounts: AccountPolicySettings = AccountPolicySettings()
    housekeeping: HousekeepingSettings = HousekeepingSettings()
    metrics: MetricsSettings = MetricsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, EnvSource(settings_cls, frozenset(variables()))

    @model_validator(mode="before")
    @classmethod
    def _route(cls, data: Any) -> Any:
        """Flat names and variables → the section that declares them; dependent defaults."""
        if not isinstance(data, dict):
            return data
        routes = variables()
        by_flat = _flat_names()
        given: dict[str, Any] = {}
        routed: dict[str, Any] = {}
        for key, value in data.items():
            if key in cls.model_fields and (key not in by_flat or is_section(type(value))):
                routed[key] = value  # a whole section
                continue
            variable = key.upper() if key.upper() in routes else by_flat.get(key.lower())
            if variable is not None:
                given[variable] = value
        if given.get("KEEL_STATE_FILE") is None:
            url = given.get("DATABASE_URL", DEFAULT_DATABASE_URL)
            given["KEEL_STATE_FILE"] = state_file_beside(_text(url))
        if given.get("KEEL_DRAIN_SECONDS") is None:
            production = given.get("KEEL_ENV") == "production"
            given["KEEL_DRAIN_SECONDS"] = DEFAULT_PRODUCTION_DRAIN if production else 0.0
        for variable, value in given.items():
            *path, leaf = routes[variable]
            target = routed
            for part in path:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    break  # the section was given whole (Settings(cache=...)): taken as it is
            else:
                target[leaf] = value
        return routed

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        """The values that depend on several settings, computed once."""
        if self.sessions.idle_ttl > self.sessions.absolute_ttl:
            raise ValueError("KEEL_SESSION_IDLE_TTL must not exceed KEEL_SESSION_ABSOLUTE_TTL")
        production = self.is_production
        proxies = self.server.trusted_proxies
        http = self.http
        # Validation owns this instance until it returns: the one place sections are replaced.
        fill = object.__setattr__
        fill(
            self,
            "http",
            dataclasses.replace(
                http,
                trusted_proxies=tuple(
                    ipaddress.ip_network(entry, strict=False) for entry in proxies if entry != "*"
                ),
                trust_all_proxies="*" in proxies,
                docs_enabled=http.docs if http.docs is not None else not production,
                require_https=production,
            ),
        )
        issuer = self.tokens.issuer or self.public_url or "keel"
        fill(self, "tokens", dataclasses.replace(self.tokens, issuer=issuer))
        fill(self, "passwords", dataclasses.replace(self.passwords, service_name=self.service_name))
        fill(self, "audit", _audit_keys(self.audit, self.secret_key))
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"


def _audit_keys(audit: AuditSettings, secret_key: SecretStr | None) -> AuditSettings:
    """The sealing key (given, derived from ``SECRET_KEY``, or development) and the older ones."""
    keys = parse_keys(audit.previous_keys) if audit.previous_keys is not None else {}
    development = False
    if audit.key is not None:
        current = audit.key
    elif secret_key is not None:
        # Derived, so that one secret is enough to start; production still wants its own.
        current = SecretStr(
            hmac.new(
                secret_key.get_secret_value().encode(), b"keel-audit-key", hashlib.sha256
            ).hexdigest()
        )
    else:
        current, development = SecretStr(DEVELOPMENT_AUDIT_KEY), True
    keys[audit.current_key_id] = current
    return dataclasses.replace(audit, keys=keys, is_development_key=development)


@functools.cache
def variables() -> dict[str, tuple[str, ...]]:
    """Every variable ``Settings`` reads → the attribute path its value lands on.

    Worked out from the sections on first use (not at import); ``TypeError`` if
    a variable is declared twice or a field declares none.
    """
    return declared(Settings)


@functools.cache
def _flat_names() -> dict[str, str]:
    return {flat_name(variable): variable for variable in variables()}
