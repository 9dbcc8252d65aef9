"""Configuration checks with stable ids: ``keel.E0nn`` errors, ``keel.W0nn`` warnings.

``keel check`` prints them; ``create_app`` and ``keel serve`` refuse to start a
production environment (``KEEL_ENV=production``) while any error stands. Ids
never change meaning; retired ids are not reused. Messages name the setting,
never its value. Settings that cannot even be built (E000, and E022-E024 for
``KEEL_BIND`` and ``PORT``, from ``load_settings``) stop every command in every
environment; only those hints repeat what was written, ``KEEL_BIND`` being no
secret.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, parse_qsl, urlsplit

from pydantic import ValidationError

from keel._secrets import weakness
from keel.settings import Settings

__all__ = ["Finding", "errors_in", "load_settings", "run_checks"]

MIN_SECRET_LENGTH = 32
STRICT_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One configuration finding."""

    id: str
    level: Literal["error", "warning"]
    message: str
    hint: str

    @property
    def is_error(self) -> bool:
        return self.level == "error"

    def __str__(self) -> str:
        return f"{self.id} [{self.level}] {self.message}\n    hint: {self.hint}"


def _error(id_: str, message: str, hint: str) -> Finding:
    return Finding(f"keel.{id_}", "error", message, hint)


def _warning(id_: str, message: str, hint: str) -> Finding:
    return Finding(f"keel.{id_}", "warning", message, hint)


def load_settings(environ: dict[str, str] | None = None) -> tuple[Settings | None, list[Finding]]:
    """Build ``Settings`` from the environment, turning invalid values into findings.

    A rule of keel's own (``KEEL_BIND``, ``PORT``: see ``keel._listen``) gives
    its own id and hint; any other invalid value is E000. Validation messages
    come from the field rules, never from the submitted value, so a mistyped
    secret is not echoed.
    """
    try:
        if environ is None:
            return Settings(), []
        return Settings.model_validate(environ), []  # pragma: no cover - convenience for tools
    except ValidationError as exc:
        findings = []
        for err in exc.errors(include_input=False, include_url=False):
            if err["type"].startswith("keel."):
                hint = str(err.get("ctx", {}).get("hint", ""))
                findings.append(Finding(err["type"], "error", err["msg"], hint))
                continue
            where = ".".join(str(part) for part in err["loc"]) or "settings"
            findings.append(
                _error(
                    "E000",
                    f"invalid setting {where.upper()}: {err['msg']}",
                    "fix the environment variable; `keel check` lists every setting it reads",
                )
            )
        return None, findings


def _is_loopback(host: str | None) -> bool:
    if host is None or host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.endswith(".localhost")


def _secret_findings(settings: Settings) -> Iterator[Finding]:
    production = settings.is_production
    if settings.secret_key is None:
        if production:
            yield _error(
                "E001",
                "SECRET_KEY is not set",
                'set SECRET_KEY to at least 32 random bytes, e.g. `python -c "import secrets; '
                'print(secrets.token_urlsafe(48))"`',
            )
        else:
            yield _warning(
                "W001",
                "SECRET_KEY is not set; the audit chain is sealed with a fixed development key",
                "set SECRET_KEY (or KEEL_AUDIT_KEY) to 32+ random characters before production",
            )
        return
    secret = settings.secret_key.get_secret_value()
    if len(secret) < MIN_SECRET_LENGTH:
        yield (_error if production else _warning)(
            "E002" if production else "W002",
            f"SECRET_KEY is shorter than {MIN_SECRET_LENGTH} characters",
            "generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
        )
    if weakness(secret) is not None:
        yield (_error if production else _warning)(
            "E003" if production else "W003",
            "SECRET_KEY looks like a placeholder or has too little randomness",
            "use a random value from a secret store, never an example value",
        )


def _runtime_findings(settings: Settings) -> Iterator[Finding]:
    if settings.is_production and settings.debug:
        yield _error("E004", "debug is on in production", "unset KEEL_DEBUG")
    if settings.is_production and settings.reload:
        yield _error("E005", "reload is on in production", "unset KEEL_RELOAD; use `keel serve`")
    if settings.graceful_timeout <= 3:
        yield _warning(
            "W004",
            "KEEL_GRACEFUL_TIMEOUT is 3 s or less: in-flight requests get no time at shutdown",
            "set KEEL_GRACEFUL_TIMEOUT to a few seconds more than your slowest request",
        )
    drain = settings.effective_drain_seconds
    if drain and drain + math.ceil(settings.shutdown_timeout) + 1 >= settings.graceful_timeout:
        yield _error(
            "E040",
            "KEEL_DRAIN_SECONDS leaves no time in KEEL_GRACEFUL_TIMEOUT for in-flight requests "
            "and the shutdown after the drain: the master would SIGKILL the workers",
            "make KEEL_GRACEFUL_TIMEOUT larger than the drain plus KEEL_SHUTDOWN_TIMEOUT "
            "plus the time your slowest request needs",
        )


#: The most bytes one password character can take in a JSON body: an astral character
#: written as two ``\\uXXXX`` escapes (what Python's and many clients' encoders emit).
_JSON_BYTES_PER_CHAR = 12


def _body_findings(settings: Settings) -> Iterator[Finding]:
    # A password change carries two passwords of up to the maximum length, plus its keys.
    needed = 2 * settings.password_max_length * _JSON_BYTES_PER_CHAR + 256
    if min(settings.max_auth_body_bytes, settings.max_body_bytes) < needed:
        yield _warning(
            "W013",
            "KEEL_MAX_AUTH_BODY_BYTES cannot hold a password change with two passwords of "
            "KEEL_PASSWORD_MAX_LENGTH characters written as JSON escapes: such requests get 413",
            f"raise KEEL_MAX_AUTH_BODY_BYTES (and KEEL_MAX_BODY_BYTES) to at least {needed}, "
            "or lower KEEL_PASSWORD_MAX_LENGTH",
        )


def _database_findings(settings: Settings) -> Iterator[Finding]:
    db = settings.database
    if db.dialect == "sqlite":
        if settings.is_production:
            yield _error(
                "E006",
                "DATABASE_URL is SQLite in production",
                "point DATABASE_URL at PostgreSQL (postgresql://user@host/db?sslmode=require)",
            )
        return
    sslmode = db.query.get("sslmode") or db.query.get("ssl")
    if settings.is_production and not _is_loopback(db.host) and sslmode not in STRICT_SSLMODES:
        yield _error(
            "E007",
            "DATABASE_URL reaches a non-loopback PostgreSQL without TLS",
            "append ?sslmode=require (or verify-full) to DATABASE_URL, or set "
            "KEEL_DATABASE_SSLMODE=require where the platform owns the URL",
        )


def _edge_findings(settings: Settings) -> Iterator[Finding]:
    production = settings.is_production
    if "*" in settings.cors_origins and settings.cors_allow_credentials:
        yield _error(
            "E008",
            "KEEL_CORS_ORIGINS is '*' while KEEL_CORS_ALLOW_CREDENTIALS is on",
            "list the exact origins (https://app.example.com) instead of '*'",
        )
    elif "*" in settings.cors_origins:
        yield _warning(
            "W005",
            "KEEL_CORS_ORIGINS is '*': every site may read responses",
            "list the exact origins that need access",
        )
    if production and any(o.startswith("http://") for o in settings.cors_origins):
        yield _error(
            "E009",
            "KEEL_CORS_ORIGINS contains a plain http:// origin in production",
            "allow only https:// origins",
        )
    if "*" in settings.trusted_proxies:
        yield _error(
            "E010",
            "KEEL_TRUSTED_PROXIES is '*': any client could forge its address",
            "list your proxies' addresses or CIDRs (default: loopback only)",
        )
    if production and settings.docs and not settings.docs_in_production:
        yield _error(
            "E011",
            "KEEL_DOCS exposes /docs and /openapi.json in production without an explicit opt-in",
            "unset KEEL_DOCS, or also set KEEL_DOCS_IN_PRODUCTION=true if this is intended",
        )
    if production and settings.public_url is None:
        # Was W006 until accounts mailed links; the id is retired, not reused.
        yield _error(
            "E019",
            "KEEL_PUBLIC_URL is not set: links in account mail would have nowhere to point",
            "set it to the https:// URL users reach keel at",
        )
    elif production and settings.public_url and settings.public_url.startswith("http://"):
        yield _error("E012", "KEEL_PUBLIC_URL is plain http in production", "use https://")


def _cache_findings(settings: Settings) -> Iterator[Finding]:
    if settings.redis_cluster and settings.redis_url is None:
        yield _error(
            "E025",
            "KEEL_REDIS_CLUSTER is on but REDIS_URL is not set",
            "set REDIS_URL to redis:// or rediss:// and any one node of the cluster, "
            "or unset KEEL_REDIS_CLUSTER",
        )
    if settings.redis_url is None:
        if not settings.is_production:
            return
        if settings.database.dialect == "postgresql" and not settings.single_instance:
            # Workers of one machine share the state file; other instances would not see it.
            yield _error(
                "E030",
                "REDIS_URL is not set: brute-force limits and the security cache would be "
                "shared only by the workers of each machine, not between instances",
                "set REDIS_URL; if this is the only instance, set KEEL_SINGLE_INSTANCE=true",
            )
        else:
            yield _warning(
                "W007",
                "REDIS_URL is not set: brute-force limits and the security cache are shared "
                "by the workers of this machine only",
                "fine for one instance; set REDIS_URL before running a second one",
            )
        return
    parts = urlsplit(settings.redis_url.get_secret_value())
    if settings.redis_cluster and (parts.scheme == "unix" or _redis_database(parts) != "0"):
        yield _error(
            "E026",
            "REDIS_URL is a unix socket or selects a database other than 0, "
            "which Redis Cluster does not support",
            "name one node as redis://host:port or rediss://host:port, without a database",
        )
    if settings.is_production and parts.scheme == "redis" and not _is_loopback(parts.hostname):
        yield _warning(
            "W008",
            "REDIS_URL reaches a non-loopback Redis without TLS",
            "use a rediss:// URL",
        )
    if settings.is_production and parts.scheme == "rediss" and not settings.redis_tls_verify:
        yield _warning(
            "W012",
            "KEEL_REDIS_TLS_VERIFY is false: Redis's TLS certificate is not verified",
            "fine for a managed Redis with a self-signed certificate on a private route "
            "(Heroku Redis); otherwise unset it",
        )


def _redis_database(parts: SplitResult) -> str:
    # redis-py reads the database from ?db= first, then from the path.
    query = dict(parse_qsl(parts.query))
    return query.get("db") or parts.path.strip("/") or "0"


def _audit_findings(settings: Settings) -> Iterator[Finding]:
    if settings.audit_key is None:
        if settings.is_production:
            yield _error(
                "E013",
                "KEEL_AUDIT_KEY is not set: the audit chain would be sealed with a derived key",
                "set KEEL_AUDIT_KEY to 32+ random characters kept outside the database",
            )
        return
    if len(settings.audit_key.get_secret_value()) < MIN_SECRET_LENGTH:
        yield _error(
            "E014",
            f"KEEL_AUDIT_KEY is shorter than {MIN_SECRET_LENGTH} characters",
            "use 32+ random characters; rotate with KEEL_AUDIT_KEY_ID and KEEL_AUDIT_PREVIOUS_KEYS",
        )


def _mail_findings(settings: Settings) -> Iterator[Finding]:
    if settings.mail_backend == "file" and not settings.mail_file:
        yield _error("E020", "KEEL_MAIL_BACKEND is file but KEEL_MAIL_FILE is not set", "set it")
    if settings.is_production and settings.mail_backend != "smtp":
        yield _warning(
            "W011",
            "mail is not sent in production (KEEL_MAIL_BACKEND is not smtp)",
            "set KEEL_MAIL_BACKEND=smtp and KEEL_SMTP_HOST, KEEL_SMTP_USERNAME, KEEL_SMTP_PASSWORD",
        )
    if settings.mail_retry_max < settings.mail_retry_base:
        yield _warning(
            "W014",
            "KEEL_MAIL_RETRY_MAX is below KEEL_MAIL_RETRY_BASE: every retry waits the maximum",
            "set KEEL_MAIL_RETRY_MAX above KEEL_MAIL_RETRY_BASE",
        )
    if settings.mail_backend == "smtp" and settings.mail_lease / 4 < settings.smtp_timeout:
        yield _warning(
            "W015",
            "KEEL_MAIL_LEASE is short for KEEL_SMTP_TIMEOUT: an attempt is cut off at a quarter "
            "of the lease, possibly before the relay answers, and the message is sent again",
            "set KEEL_MAIL_LEASE to at least four times KEEL_SMTP_TIMEOUT",
        )
    plain_smtp = settings.mail_backend == "smtp" and settings.smtp_security == "none"
    if settings.is_production and plain_smtp and not _is_loopback(settings.smtp_host):
        yield _error(
            "E021",
            "KEEL_SMTP_SECURITY is none for a non-loopback SMTP host",
            "use starttls or tls",
        )


def _metrics_findings(settings: Settings) -> Iterator[Finding]:
    token = settings.metrics.token
    if token is None:
        return  # GET /metrics answers 404: nothing is exposed
    value = token.get_secret_value()
    if len(value) < MIN_SECRET_LENGTH:
        yield _error(
            "E050",
            f"KEEL_METRICS_TOKEN is shorter than {MIN_SECRET_LENGTH} characters",
            "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    elif weakness(value) is not None:
        yield _error(
            "E051",
            "KEEL_METRICS_TOKEN looks like a placeholder or has too little randomness",
            "use a random value from a secret store, never an example value",
        )


def run_checks(settings: Settings) -> list[Finding]:
    """Every finding for ``settings``, errors first, each with a stable id."""
    findings = [
        *_secret_findings(settings),
        *_runtime_findings(settings),
        *_body_findings(settings),
        *_database_findings(settings),
        *_edge_findings(settings),
        *_cache_findings(settings),
        *_audit_findings(settings),
        *_mail_findings(settings),
        *_metrics_findings(settings),
    ]
    return sorted(findings, key=lambda f: (not f.is_error, f.id))


def errors_in(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.is_error]
