from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from keel._listen import ListenSettingError, parse_bind, parse_port
from keel.settings import Settings, normalize_database_url

pytestmark = pytest.mark.usefixtures("clean_environment")


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
    assert settings.database.url.get_secret_value() == "postgresql+asyncpg://u:pw@db/x"
    assert settings.cache.redis_url is not None
    assert settings.server.port == 9001
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
    assert settings.cache.redis_url is None
    assert settings.cache.cluster is False
    assert settings.server.bind == "127.0.0.1"
    assert settings.server.port == 8000
    assert settings.server.max_requests == 0
    assert settings.server.keepalive > 2
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
    with pytest.raises(ValidationError, match="KEEL_CACHE_NAMESPACE"):
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
        ("KEEL_IPV6_PREFIX_LENGTH", "31"),
        ("KEEL_IPV6_PREFIX_LENGTH", "129"),
        ("KEEL_RATE_LIMIT_REFRESH_SESSION", "0"),
        ("KEEL_MAIL_RECIPIENT_LIMIT", "0"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.env = "production"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("::", "::"),
        ("[::]", "::"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("localhost", "localhost"),
        ("api.internal.example.", "api.internal.example."),
        (" 10.0.0.7 ", "10.0.0.7"),
        ("", "127.0.0.1"),
    ],
)
def test_bind_takes_ip_literals_with_or_without_brackets_and_host_names(
    given: str, expected: str
) -> None:
    assert parse_bind(given) == expected
    assert Settings(bind=given).server.bind == expected


@pytest.mark.parametrize(
    ("given", "finding_id", "hint"),
    [
        ("127.0.0.1:8000", "E022", "put the port in PORT: KEEL_BIND=127.0.0.1 PORT=8000"),
        ("[::1]:8000", "E022", "put the port in PORT: KEEL_BIND=::1 PORT=8000"),
        ("0.0.0.0:80", "E022", "put the port in PORT: KEEL_BIND=0.0.0.0 PORT=80"),
        ("localhost:9000", "E022", "KEEL_BIND=localhost PORT=9000"),
        (":8000", "E022", "KEEL_BIND=0.0.0.0 PORT=8000"),
        ("127.0.0.1:99999", "E022", "KEEL_BIND=127.0.0.1 PORT=<a number from 1 to 65535>"),
        ("256.1.1.1", "E023", "KEEL_BIND=127.0.0.1 (this machine only)"),
        ("1.2.3", "E023", "the port goes in PORT"),
        ("exa mple", "E023", "KEEL_BIND=0.0.0.0 (every IPv4 interface)"),
        ("-bad-.example", "E023", "KEEL_BIND=:: (every IPv6 interface)"),
        ("*", "E023", "an IP address or a host name"),
        ("[127.0.0.1]", "E023", "an IP address or a host name"),
        ("fe80::1%eth0", "E023", "an IP address or a host name"),
        ("unix:/x", "E023", "KEEL_BIND=127.0.0.1 PORT=8000"),
        ("/run/keel.sock", "E023", "KEEL_BIND=127.0.0.1 PORT=8000"),
        ("http://0.0.0.0:8000", "E023", "write the address alone: KEEL_BIND=0.0.0.0 PORT=8000"),
    ],
)
def test_bind_refuses_ports_and_non_addresses_with_what_to_write_instead(
    given: str, finding_id: str, hint: str
) -> None:
    with pytest.raises(ListenSettingError) as caught:
        parse_bind(given)
    assert caught.value.finding_id == finding_id
    assert hint in caught.value.hint
    assert "KEEL_BIND" in caught.value.message


@pytest.mark.parametrize(("given", "expected"), [("8000", 8000), (" 1 ", 1), ("65535", 65535)])
def test_port_takes_1_to_65535(given: str, expected: int) -> None:
    assert parse_port(given) == expected
    assert parse_port(expected) == expected


@pytest.mark.parametrize("given", ["0", "70000", "65536", "abc", "-1", "80.0", "٣٠٠٠", 0, True])
def test_port_out_of_range_or_not_a_number_is_e024(given: object) -> None:
    with pytest.raises(ListenSettingError) as caught:
        parse_port(given)
    assert caught.value.finding_id == "E024"
    assert "PORT=8000" in caught.value.hint


def test_limit_settings_reach_the_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_IPV6_PREFIX_LENGTH", "56")
    monkeypatch.setenv("KEEL_RATE_LIMIT_REFRESH_SESSION", "4")
    monkeypatch.setenv("KEEL_MAIL_RECIPIENT_LIMIT", "2")
    throttle = Settings().throttle
    assert (throttle.ipv6_prefix_length, throttle.refresh_session_limit) == (56, 4)
    assert throttle.mail_recipient_limit == 2
