"""What Heroku and Render hand keel: ``postgres://`` URLs without ``sslmode``, ``rediss://``
URLs to a Redis whose certificate is self-signed, ``PORT`` and ``WEB_CONCURRENCY``."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from keel.checks import run_checks
from keel.db._url_options import postgres_options as _postgres_options
from keel.settings import Settings

PRODUCTION = {
    "KEEL_ENV": "production",
    "SECRET_KEY": "Zq3v9LmX2pT7wR4yK8nB1cF6hJ0dS5gA-uE_iO",
    "KEEL_AUDIT_KEY": "Audit-Kq8v2LmX9pT4wR7yK1nB3cF5hJ6dS0gA",
    "KEEL_PUBLIC_URL": "https://id.example.com",
    "KEEL_MAIL_BACKEND": "smtp",
    "KEEL_SMTP_HOST": "mx.example",
    "REDIS_URL": "rediss://cache.internal:6380/0",
}
# Heroku Postgres's form: the postgres scheme, a public host, no sslmode (TLS is required).
HEROKU_DATABASE_URL = "postgres://u1:p2@ec2-3-4-5-6.compute-1.amazonaws.com:5432/d7"


pytestmark = pytest.mark.usefixtures("clean_environment")


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_platform_postgres_url_picks_asyncpg(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, DATABASE_URL=HEROKU_DATABASE_URL)
    assert settings.database.url.get_secret_value().startswith("postgresql+asyncpg://u1:p2@ec2-")
    assert settings.database.dialect == "postgresql"


def test_database_sslmode_applies_to_a_platform_url_that_names_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(
        monkeypatch, DATABASE_URL=HEROKU_DATABASE_URL, KEEL_DATABASE_SSLMODE="require", **PRODUCTION
    )
    assert settings.database.query["sslmode"] == "require"
    # asyncpg is handed an encrypting context, and production has nothing to object to.
    options = _postgres_options(make_url(settings.database.url.get_secret_value()), 5.0)
    assert options.ssl.mode == "require"
    assert {f.id for f in run_checks(settings)} == set()


def test_an_sslmode_in_the_url_wins_over_database_sslmode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(
        monkeypatch,
        DATABASE_URL=HEROKU_DATABASE_URL + "?sslmode=verify-full",
        KEEL_DATABASE_SSLMODE="require",
    )
    assert settings.database.query["sslmode"] == "verify-full"


def test_a_platform_url_without_tls_is_still_refused_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(monkeypatch, DATABASE_URL=HEROKU_DATABASE_URL, **PRODUCTION)
    assert "keel.E007" in {f.id for f in run_checks(settings)}


def test_database_sslmode_takes_only_libpq_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("KEEL_DATABASE_SSLMODE", "sometimes")
    with pytest.raises(ValidationError):
        Settings()


def test_redis_tls_is_verified_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings(monkeypatch).cache.tls_verify is True
    monkeypatch.setenv("KEEL_REDIS_TLS_VERIFY", "false")
    assert Settings().cache.tls_verify is False


def test_unverified_redis_tls_in_production_is_a_warning_not_silence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**PRODUCTION, "DATABASE_URL": HEROKU_DATABASE_URL, "KEEL_DATABASE_SSLMODE": "require"}
    assert {f.id for f in run_checks(_settings(monkeypatch, **env))} == set()
    monkeypatch.setenv("KEEL_REDIS_TLS_VERIFY", "false")
    findings = run_checks(Settings())
    assert [(f.id, f.level) for f in findings] == [("keel.W012", "warning")]
    assert "KEEL_REDIS_TLS_VERIFY" in findings[0].message


def test_port_and_web_concurrency_reach_the_server_section(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = _settings(monkeypatch, PORT="10000", WEB_CONCURRENCY="3").server
    assert (server.port, server.workers) == (10000, 3)
