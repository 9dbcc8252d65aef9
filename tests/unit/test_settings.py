from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from keel.settings import Settings, normalize_database_url


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("KEEL_") or name in {
            "DATABASE_URL",
            "REDIS_URL",
            "PORT",
            "WEB_CONCURRENCY",
            "SECRET_KEY",
        }:
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql://u@h/db?sslmode=require", "postgresql+asyncpg://u@h/db?sslmode=require"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
    ],
)
def test_database_url_forms_pick_the_async_driver(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize("bad", ["mysql://h/db", "nonsense", "http://h/"])
def test_database_url_other_schemes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL"):
        normalize_database_url(bad)


def test_platform_names_come_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:pw@db/x")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("SECRET_KEY", "s" * 40)
    monkeypatch.setenv("KEEL_ENV", "production")
    monkeypatch.setenv("KEEL_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1")
    monkeypatch.setenv("KEEL_CORS_ORIGINS", "https://app.example.com,https://b.example.com/")
    settings = Settings()
    assert settings.database_url.get_secret_value() == "postgresql+asyncpg://u:pw@db/x"
    assert settings.redis_url is not None
    assert settings.port == 9001
    assert settings.server.workers == 3
    assert settings.is_production
    assert settings.http.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.1/32"),
    )
    assert settings.http.cors.origins == ("https://app.example.com", "https://b.example.com")


def test_defaults_are_safe_for_a_bare_machine() -> None:
    settings = Settings()
    assert settings.database.dialect == "sqlite"
    assert settings.redis_url is None
    assert settings.cache.cluster is False
    assert settings.bind == "127.0.0.1"
    assert settings.port == 8000
    assert settings.max_requests == 0
    assert settings.keepalive > 2
    assert [str(n) for n in settings.http.trusted_proxies] == ["127.0.0.1/32", "::1/128"]
    assert settings.http.docs_enabled
    assert settings.http.cors.origins == ()


def test_docs_follow_the_environment_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_ENV", "production")
    assert not Settings().http.docs_enabled
    monkeypatch.setenv("KEEL_DOCS", "true")
    assert Settings().http.docs_enabled


def test_secrets_never_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "canary-secret-3f9a1b2c3d4e5f60718293a4b5c6d7e8")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:canary-pw-77@db/x")
    monkeypatch.setenv("REDIS_URL", "redis://:canary-redis-88@cache/0")
    settings = Settings()
    text = repr(settings) + str(settings) + repr(settings.database) + repr(settings.cache)
    for canary in ("canary-secret", "canary-pw-77", "canary-redis-88"):
        assert canary not in text
    assert "canary-pw-77" not in settings.database.redacted_url()
    assert settings.database.redacted_url() == "postgresql+asyncpg://user:***@db/x"


def test_redacted_url_hides_password_query_parameters() -> None:
    settings = Settings(database_url="postgresql://u@db/x?password=canary-q&sslmode=require")
    assert "canary-q" not in settings.database.redacted_url()
    assert "sslmode=require" in settings.database.redacted_url()


def test_audit_key_falls_back_to_a_derived_then_a_development_key() -> None:
    bare = Settings().audit
    assert bare.is_development_key
    derived = Settings(secret_key="Zq3v9LmX2pT7wR4yK8nB1cF6hJ0dS5gA-uE_iO").audit
    assert not derived.is_development_key
    assert derived.keys["k1"].get_secret_value() != bare.keys["k1"].get_secret_value()
    explicit = Settings(
        audit_key="A" * 40,
        audit_key_id="k2",
        audit_previous_keys="k1:" + "B" * 40,
    ).audit
    assert explicit.current_key_id == "k2"
    assert {k: v.get_secret_value() for k, v in explicit.keys.items()} == {
        "k1": "B" * 40,
        "k2": "A" * 40,
    }
    with pytest.raises(ValidationError):
        Settings(audit_previous_keys="k1:short")


def test_cluster_mode_reaches_the_cache_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://node-1.cache:6380")
    monkeypatch.setenv("KEEL_REDIS_CLUSTER", "true")
    monkeypatch.setenv("KEEL_CACHE_NAMESPACE", "app:")
    cache = Settings().cache
    assert cache.cluster is True
    assert cache.namespace == "app:"
    assert cache.redis_url is not None


@pytest.mark.parametrize("namespace", ["app{x}:", "app{:", "a}b"])
def test_the_cache_namespace_never_holds_a_hash_tag(
    monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    # A brace would decide every key's Redis Cluster hash slot.
    monkeypatch.setenv("KEEL_CACHE_NAMESPACE", namespace)
    with pytest.raises(ValidationError, match="cache_namespace"):
        Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "70000"),
        ("KEEL_ENV", "staging"),
        ("KEEL_TRUSTED_PROXIES", "not-a-cidr"),
        ("KEEL_CORS_ORIGINS", "https://app.example.com/path"),
        ("KEEL_CORS_ORIGINS", "app.example.com"),
        ("KEEL_PUBLIC_URL", "ftp://x"),
        ("REDIS_URL", "memcached://x"),
        ("KEEL_MAX_BODY_BYTES", "10"),
        ("KEEL_REDIS_CLUSTER", "sometimes"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
