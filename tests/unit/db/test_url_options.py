"""Turning platform URLs into what asyncpg accepts; building engines without connecting."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from keel.db import Database, build_engine
from keel.db._url_options import postgres_options as _postgres_options
from keel.errors import ConfigurationError, DatabaseUnavailable
from keel.settings import DatabaseSettings, normalize_database_url

BASE = "postgresql+asyncpg://app:pw@db.example.com:5432/app"


def _settings(url: str, **overrides: Any) -> DatabaseSettings:
    values: dict[str, Any] = {
        "pool_size": 3,
        "max_overflow": 4,
        "pool_timeout": 1.5,
        "connect_timeout": 2.5,
        "echo": False,
    }
    values.update(overrides)
    return DatabaseSettings(url=SecretStr(normalize_database_url(url)), **values)


def _ssl(query: str) -> object:
    return _postgres_options(make_url(f"{BASE}?{query}"), 5.0).ssl.connect_arg()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sslmode=disable", False),
        ("sslmode=allow", "allow"),
        ("sslmode=prefer", "prefer"),
        ("sslmode=require", "require"),
        ("sslmode=REQUIRE", "require"),
        ("ssl=true", "require"),
        ("ssl=false", False),
        ("ssl=require", "require"),
    ],
)
def test_sslmode_becomes_asyncpg_ssl(query: str, expected: object) -> None:
    assert _ssl(query) == expected


def test_no_sslmode_leaves_asyncpg_default() -> None:
    assert _ssl("application_name=x") is None


def test_verify_full_checks_chain_and_hostname() -> None:
    ctx = _ssl("sslmode=verify-full&sslrootcert=system")
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_verify_ca_checks_chain_not_hostname() -> None:
    ctx = _ssl("sslmode=verify-ca&sslrootcert=system")
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is False


def test_libpq_parameters_leave_the_url() -> None:
    options = _postgres_options(
        make_url(
            f"{BASE}?sslmode=require&connect_timeout=0&application_name=svc"
            "&channel_binding=prefer&statement_cache_size=0&target_session_attrs=read-write"
        ),
        2.5,
    )
    assert dict(options.url.query) == {"target_session_attrs": "read-write"}
    assert options.connect_args["timeout"] == 2.5  # bounded, whatever the URL said
    assert options.connect_args["statement_cache_size"] == 0
    assert options.connect_args["server_settings"] == {"application_name": "svc", "timezone": "UTC"}


def test_default_session_settings() -> None:
    options = _postgres_options(make_url(BASE), 5.0)
    assert options.connect_args["server_settings"] == {
        "application_name": "keel",
        "timezone": "UTC",
    }
    assert options.url.render_as_string(hide_password=False) == BASE


@pytest.mark.parametrize(
    "query",
    [
        "sslmode=sometimes",
        "ssl=maybe",
        "channel_binding=require",
        "sslnegotiation=whenever",
        "statement_cache_size=many",
        "options=-c%20search_path%3Dx",
        "unknown=1",
        "sslmode=require&sslmode=disable",
    ],
)
def test_unusable_url_options_fail_at_construction(query: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Database(_settings(f"{BASE}?{query}"))
    assert "pw" not in str(caught.value)


def test_direct_tls_negotiation() -> None:
    options = _postgres_options(make_url(f"{BASE}?sslmode=require&sslnegotiation=direct"), 5.0)
    assert options.connect_args["direct_tls"] is True


async def test_engine_is_lazy_and_bounded() -> None:
    db = Database(_settings(f"{BASE}?sslmode=require"))
    try:
        engine = db.engine
        assert db.engine is engine
        assert engine.dialect.name == "postgresql"
        assert engine.dialect.driver == "asyncpg"
        assert "sslmode" not in engine.url.query
        pool: Any = engine.pool
        assert pool.size() == 3
        assert pool.timeout() == 1.5
        assert pool.checkedout() == 0
    finally:
        await db.dispose()


async def test_sqlite_engine_is_lazy_and_bounded(tmp_path: Any) -> None:
    path = tmp_path / "lazy.sqlite3"
    engine = build_engine(_settings(f"sqlite:///{path}"))
    try:
        assert engine.dialect.driver == "aiosqlite"
        pool: Any = engine.pool
        assert pool.size() == 3
        assert not path.exists()
    finally:
        await engine.dispose()


async def test_in_memory_sqlite_builds() -> None:
    engine = build_engine(_settings("sqlite:///:memory:"))
    await engine.dispose()


def test_settings_are_kept() -> None:
    settings = _settings(BASE)
    db = Database(settings)
    assert db.settings is settings
    assert db.dialect == "postgresql"


async def test_missing_tls_files_are_a_configuration_error(tmp_path: Any) -> None:
    missing = tmp_path / "no-such-root.crt"
    db = Database(_settings(f"{BASE}?sslmode=verify-full&sslrootcert={missing}"))
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with db.unit_of_work():
                pass
        assert isinstance(caught.value.__cause__, FileNotFoundError)
        with pytest.raises(DatabaseUnavailable) as unready:
            await db.ping(1.0)
        assert isinstance(unready.value.__cause__, ConfigurationError)
    finally:
        await db.dispose()
