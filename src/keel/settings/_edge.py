"""How keel is served: the gunicorn runtime, the HTTP edge (with CORS) and the lifespan."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from keel._listen import DEFAULT_BIND, DEFAULT_PORT, ListenSettingError, parse_bind, parse_port
from keel.settings._declare import derived, env, split_csv

__all__ = [
    "DEFAULT_PRODUCTION_DRAIN",
    "LOOPBACK_PROXIES",
    "CorsSettings",
    "HttpSettings",
    "IPNetwork",
    "LifecycleSettings",
    "LogLevel",
    "ServerSettings",
]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK_PROXIES = ("127.0.0.1/32", "::1/128")
#: A worker's drain after SIGTERM in production when ``KEEL_DRAIN_SECONDS`` is unset: about
#: one health-check interval of a load balancer (nginx, HAProxy, cloud balancers: 2-10 s).
DEFAULT_PRODUCTION_DRAIN = 5.0


def _listen_rule(parse: Callable[[object], object]) -> BeforeValidator:
    """``KEEL_BIND`` and ``PORT`` carry their own finding ids and hints (``keel._listen``)."""

    def check(value: object) -> object:
        try:
            return parse(value)
        except ListenSettingError as exc:
            # The type carries the finding id, the context its hint (keel.checks.load_settings).
            raise PydanticCustomError(
                f"keel.{exc.finding_id}", exc.message, {"hint": exc.hint}
            ) from None

    return BeforeValidator(check)


def _bind(value: object) -> object:
    return parse_bind(value) if isinstance(value, str) else value


def _blank_is_unset(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _proxies(value: tuple[str, ...]) -> tuple[str, ...]:
    for entry in value:
        if entry != "*":
            ipaddress.ip_network(entry, strict=False)
    return value


def _origins(value: tuple[str, ...]) -> tuple[str, ...]:
    for origin in value:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("CORS origins must be scheme://host[:port]")
        if parts.path not in {"", "/"} or parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError("CORS origins must be scheme://host[:port] with nothing else")
    return tuple(origin.rstrip("/") for origin in value)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What the gunicorn runtime needs.

    ``drain_seconds``: how long a worker keeps serving after SIGTERM with
    /readyz at 503; unset, ``DEFAULT_PRODUCTION_DRAIN`` in production and 0 in
    development (``Settings`` decides).
    """

    bind: Annotated[str, _listen_rule(_bind), env("KEEL_BIND")] = DEFAULT_BIND
    port: Annotated[int, _listen_rule(parse_port), env("PORT")] = DEFAULT_PORT
    workers: Annotated[
        Annotated[int, Field(ge=1, le=256)] | None,
        BeforeValidator(_blank_is_unset),
        env("WEB_CONCURRENCY"),
    ] = None
    timeout: Annotated[int, env("KEEL_TIMEOUT", ge=1)] = 30
    graceful_timeout: Annotated[int, env("KEEL_GRACEFUL_TIMEOUT", ge=2)] = 30
    keepalive: Annotated[int, env("KEEL_KEEPALIVE", ge=1)] = 75
    max_requests: Annotated[int, env("KEEL_MAX_REQUESTS", ge=0)] = 0
    max_requests_jitter: Annotated[int, env("KEEL_MAX_REQUESTS_JITTER", ge=0)] = 0
    max_header_fields: Annotated[int, env("KEEL_MAX_HEADER_FIELDS", ge=1, le=10_000)] = 100
    max_header_bytes: Annotated[int, env("KEEL_MAX_HEADER_BYTES", ge=1024, le=1_048_576)] = 16_384
    #: CIDRs (or ``*``) whose forwarded headers are believed; ``HttpSettings`` gets them parsed.
    trusted_proxies: Annotated[
        tuple[str, ...],
        BeforeValidator(split_csv),
        env("KEEL_TRUSTED_PROXIES"),
        AfterValidator(_proxies),
    ] = LOOPBACK_PROXIES
    log_level: Annotated[LogLevel, env("KEEL_LOG_LEVEL")] = "INFO"
    reload: Annotated[bool, env("KEEL_RELOAD")] = False
    drain_seconds: Annotated[float, env("KEEL_DRAIN_SECONDS", ge=0, le=300)] = 0.0


@dataclass(frozen=True, slots=True)
class CorsSettings:
    """The exact CORS allow-list."""

    origins: Annotated[
        tuple[str, ...],
        BeforeValidator(split_csv),
        env("KEEL_CORS_ORIGINS"),
        AfterValidator(_origins),
    ] = ()
    allow_credentials: Annotated[bool, env("KEEL_CORS_ALLOW_CREDENTIALS")] = False
    max_age: Annotated[int, env("KEEL_CORS_MAX_AGE", ge=0, le=86400)] = 600


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What the HTTP edge needs.

    ``max_auth_body_bytes`` is never above ``max_body_bytes``. The proxies
    (parsed from ``KEEL_TRUSTED_PROXIES``), ``docs_enabled`` and
    ``require_https`` (SEC-60: refuse what a trusted proxy forwarded from plain
    HTTP) are derived by ``Settings``.
    """

    trusted_proxies: tuple[IPNetwork, ...] = derived(())
    trust_all_proxies: bool = derived(False)
    max_body_bytes: Annotated[int, env("KEEL_MAX_BODY_BYTES", ge=1024)] = 1_048_576
    max_auth_body_bytes: Annotated[int, env("KEEL_MAX_AUTH_BODY_BYTES", ge=1024)] = 32_768
    max_json_members: Annotated[int, env("KEEL_MAX_JSON_MEMBERS", ge=16, le=100_000)] = 256
    max_json_depth: Annotated[int, env("KEEL_MAX_JSON_DEPTH", ge=4, le=1000)] = 32
    request_timeout: Annotated[float, env("KEEL_REQUEST_TIMEOUT", gt=0)] = 30.0
    hsts_max_age: Annotated[int, env("KEEL_HSTS_MAX_AGE", ge=0)] = 63_072_000
    #: ``KEEL_DOCS`` as written: ``None`` follows the environment (see ``docs_enabled``).
    docs: Annotated[bool | None, env("KEEL_DOCS")] = None
    docs_in_production: Annotated[bool, env("KEEL_DOCS_IN_PRODUCTION")] = False
    docs_enabled: bool = derived(True)
    cors: CorsSettings = CorsSettings()
    require_https: bool = derived(False)

    def __post_init__(self) -> None:
        if self.max_auth_body_bytes > self.max_body_bytes:
            object.__setattr__(self, "max_auth_body_bytes", self.max_body_bytes)


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    """What the lifespan supervisor needs (seconds)."""

    warmup_timeout: Annotated[float, env("KEEL_WARMUP_TIMEOUT", gt=0)] = 2.0
    warmup_budget: Annotated[float, env("KEEL_WARMUP_BUDGET", gt=0)] = 120.0
    shutdown_timeout: Annotated[float, env("KEEL_SHUTDOWN_TIMEOUT", gt=0)] = 5.0
    readiness_timeout: Annotated[float, env("KEEL_READINESS_TIMEOUT", gt=0)] = 1.0
