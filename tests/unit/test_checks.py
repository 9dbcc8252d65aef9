from __future__ import annotations

import re

import pytest

from keel.checks import errors_in, load_settings, run_checks
from keel.settings import Settings

GOOD_SECRET = "Zq3v9LmX2pT7wR4yK8nB1cF6hJ0dS5gA-uE_iO"
PRODUCTION_OK = {
    "KEEL_ENV": "production",
    "SECRET_KEY": GOOD_SECRET,
    "DATABASE_URL": "postgresql://keel@db.internal/keel?sslmode=require",
    "REDIS_URL": "rediss://cache.internal:6380/0",
    "KEEL_PUBLIC_URL": "https://id.example.com",
    "KEEL_AUDIT_KEY": "Audit-Kq8v2LmX9pT4wR7yK1nB3cF5hJ6dS0gA",
    "KEEL_MAIL_BACKEND": "smtp",
    "KEEL_SMTP_HOST": "mx.example",
}


pytestmark = pytest.mark.usefixtures("clean_environment")


def _ids(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {f.id for f in run_checks(Settings())}


def test_a_sound_production_configuration_has_no_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _ids(PRODUCTION_OK, monkeypatch) == set()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"SECRET_KEY": ""}, "keel.E001"),
        ({"WEB_CONCURRENCY": "not-a-number"}, "keel.E000"),
        ({"SECRET_KEY": "short-but-random-9x"}, "keel.E002"),
        ({"SECRET_KEY": "changeme-changeme-changeme-changeme-123"}, "keel.E003"),
        ({"SECRET_KEY": "a" * 48}, "keel.E003"),
        ({"KEEL_DEBUG": "true"}, "keel.E004"),
        ({"KEEL_RELOAD": "true"}, "keel.E005"),
        ({"DATABASE_URL": "sqlite:///./keel.sqlite3"}, "keel.E006"),
        ({"DATABASE_URL": "postgresql://keel@db.internal/keel"}, "keel.E007"),
        ({"DATABASE_URL": "postgresql://keel@db.internal/keel?sslmode=prefer"}, "keel.E007"),
        ({"KEEL_CORS_ORIGINS": "*", "KEEL_CORS_ALLOW_CREDENTIALS": "true"}, "keel.E008"),
        ({"KEEL_CORS_ORIGINS": "http://app.example.com"}, "keel.E009"),
        ({"KEEL_TRUSTED_PROXIES": "*"}, "keel.E010"),
        ({"KEEL_DOCS": "true"}, "keel.E011"),
        ({"KEEL_PUBLIC_URL": "http://id.example.com"}, "keel.E012"),
        ({"KEEL_AUDIT_KEY": ""}, "keel.E013"),
        ({"KEEL_PUBLIC_URL": ""}, "keel.E019"),
        ({"KEEL_MAIL_BACKEND": "file"}, "keel.E020"),
        (
            {
                "KEEL_MAIL_BACKEND": "smtp",
                "KEEL_SMTP_HOST": "mx.example",
                "KEEL_SMTP_SECURITY": "none",
            },
            "keel.E021",
        ),
        ({"KEEL_AUDIT_KEY": "short-audit-key"}, "keel.E014"),
        ({"REDIS_URL": ""}, "keel.E030"),
    ],
)
def test_each_insecure_production_setting_is_an_error(
    monkeypatch: pytest.MonkeyPatch, override: dict[str, str], expected: str
) -> None:
    env = {**PRODUCTION_OK, **override}
    if expected == "keel.E000":
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings, findings = load_settings()
        assert settings is None
        assert [f.id for f in findings] == ["keel.E000"]
        assert "not-a-number" not in str(findings[0])
        return
    ids = _ids(env, monkeypatch)
    assert expected in ids
    assert all(i.startswith("keel.") for i in ids)


def test_production_without_redis_is_refused_unless_declared_one_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Several instances on one PostgreSQL would each keep their own limits and cache.
    without_redis = {**PRODUCTION_OK, "REDIS_URL": ""}
    assert "keel.E030" in _ids(without_redis, monkeypatch)
    single = {**without_redis, "KEEL_SINGLE_INSTANCE": "true"}
    ids = _ids(single, monkeypatch)
    assert "keel.E030" not in ids
    assert "keel.W007" in ids  # still said: the state is shared by this machine's workers only


@pytest.mark.parametrize("environment", ["development", "production"])
@pytest.mark.parametrize(
    ("override", "expected", "hint"),
    [
        ({"KEEL_BIND": "127.0.0.1:8000"}, "keel.E022", "KEEL_BIND=127.0.0.1 PORT=8000"),
        ({"KEEL_BIND": "[::1]:8000"}, "keel.E022", "KEEL_BIND=::1 PORT=8000"),
        ({"KEEL_BIND": "0.0.0.0:80"}, "keel.E022", "KEEL_BIND=0.0.0.0 PORT=80"),
        ({"KEEL_BIND": "256.1.1.1"}, "keel.E023", "KEEL_BIND=127.0.0.1"),
        ({"KEEL_BIND": "exa mple"}, "keel.E023", "KEEL_BIND=127.0.0.1"),
        ({"KEEL_BIND": "unix:/x"}, "keel.E023", "KEEL_BIND=127.0.0.1 PORT=8000"),
        ({"PORT": "0"}, "keel.E024", "PORT=8000"),
        ({"PORT": "70000"}, "keel.E024", "PORT=8000"),
        ({"PORT": "canary-port"}, "keel.E024", "PORT=8000"),
    ],
)
def test_a_bind_or_port_that_cannot_be_listened_on_is_its_own_error_everywhere(
    monkeypatch: pytest.MonkeyPatch,
    environment: str,
    override: dict[str, str],
    expected: str,
    hint: str,
) -> None:
    base = PRODUCTION_OK if environment == "production" else {}
    for key, value in {**base, **override, "KEEL_ENV": environment}.items():
        monkeypatch.setenv(key, value)
    settings, findings = load_settings()
    assert settings is None
    assert [(f.id, f.level) for f in findings] == [(expected, "error")]
    assert hint in findings[0].hint
    text = str(findings[0])
    assert "canary" not in text
    assert "exa mple" not in text
    assert "256.1.1.1" not in text


def test_a_bind_and_a_port_both_wrong_give_both_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_BIND", "127.0.0.1:8000")
    monkeypatch.setenv("PORT", "0")
    _, findings = load_settings()
    assert sorted(f.id for f in findings) == ["keel.E022", "keel.E024"]


def test_missing_secret_is_an_error_only_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dict(PRODUCTION_OK)
    del env["SECRET_KEY"]
    assert "keel.E001" in _ids(env, monkeypatch)
    monkeypatch.setenv("KEEL_ENV", "development")
    assert "keel.W001" in {f.id for f in run_checks(Settings())}
    assert not errors_in(run_checks(Settings()))


@pytest.mark.parametrize("environment", ["development", "production"])
def test_cluster_mode_without_redis_url_is_an_error(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    env = {**PRODUCTION_OK, "KEEL_ENV": environment, "KEEL_REDIS_CLUSTER": "true"}
    del env["REDIS_URL"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    findings = [f for f in run_checks(Settings()) if f.id == "keel.E025"]
    assert len(findings) == 1
    assert findings[0].is_error
    assert "REDIS_URL" in findings[0].hint


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rediss://cache.internal:6380", False),
        ("rediss://cache.internal:6380/0", False),
        ("rediss://cache.internal:6380/?db=0", False),
        ("rediss://cache.internal:6380/2", True),
        ("rediss://cache.internal:6380/0?db=3", True),
        ("unix:///run/redis.sock", True),
    ],
)
def test_cluster_mode_needs_a_node_address_and_database_zero(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: bool
) -> None:
    env = {**PRODUCTION_OK, "REDIS_URL": url, "KEEL_REDIS_CLUSTER": "true"}
    assert ("keel.E026" in _ids(env, monkeypatch)) is expected
    assert "keel.E025" not in _ids(env, monkeypatch)


def test_a_database_number_is_fine_without_cluster_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**PRODUCTION_OK, "REDIS_URL": "rediss://cache.internal:6380/2"}
    assert _ids(env, monkeypatch) == set()


def test_loopback_postgres_needs_no_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**PRODUCTION_OK, "DATABASE_URL": "postgresql://keel@127.0.0.1/keel"}
    assert "keel.E007" not in _ids(env, monkeypatch)


def test_docs_opt_in_in_production_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**PRODUCTION_OK, "KEEL_DOCS": "true", "KEEL_DOCS_IN_PRODUCTION": "true"}
    assert "keel.E011" not in _ids(env, monkeypatch)


def test_findings_never_contain_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**PRODUCTION_OK, "SECRET_KEY": "changeme-canary-value"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    text = "\n".join(str(f) for f in run_checks(Settings()))
    assert "canary" not in text


def test_every_finding_has_a_stable_id_and_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "KEEL_ENV": "production",
        "KEEL_DEBUG": "1",
        "KEEL_RELOAD": "1",
        "KEEL_TRUSTED_PROXIES": "*",
        "KEEL_CORS_ORIGINS": "*",
        "KEEL_CORS_ALLOW_CREDENTIALS": "1",
        "KEEL_DOCS": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    findings = run_checks(Settings())
    assert findings
    for finding in findings:
        assert re.fullmatch(r"keel\.[EW]\d{3}", finding.id)
        assert finding.hint
    # Errors come first.
    levels = [f.level for f in findings]
    assert levels == sorted(levels, key=lambda lv: lv != "error")


def test_the_drain_defaults_to_five_seconds_in_production_and_none_in_development() -> None:
    assert Settings(env="development").server.drain_seconds == 0
    assert Settings(env="production").server.drain_seconds == 5
    assert Settings(env="development", drain_seconds=2).server.drain_seconds == 2


def test_a_drain_that_eats_the_graceful_budget_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "keel.E040" not in _ids(PRODUCTION_OK, monkeypatch)
    assert "keel.E040" in _ids(
        {**PRODUCTION_OK, "KEEL_DRAIN_SECONDS": "25", "KEEL_GRACEFUL_TIMEOUT": "30"}, monkeypatch
    )


def test_an_auth_body_limit_too_small_for_the_longest_passwords_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "keel.W013" not in _ids(PRODUCTION_OK, monkeypatch)
    assert "keel.W013" in _ids({**PRODUCTION_OK, "KEEL_MAX_AUTH_BODY_BYTES": "8192"}, monkeypatch)
    small = {**PRODUCTION_OK, "KEEL_MAX_AUTH_BODY_BYTES": "8192", "KEEL_PASSWORD_MAX_LENGTH": "256"}
    assert "keel.W013" not in _ids(small, monkeypatch)


def test_mail_retry_and_lease_settings_that_defeat_themselves_are_warnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert {"keel.W014", "keel.W015"}.isdisjoint(_ids(PRODUCTION_OK, monkeypatch))
    inverted = {**PRODUCTION_OK, "KEEL_MAIL_RETRY_BASE": "60", "KEEL_MAIL_RETRY_MAX": "30"}
    assert "keel.W014" in _ids(inverted, monkeypatch)
    short = {**PRODUCTION_OK, "KEEL_MAIL_LEASE": "20", "KEEL_SMTP_TIMEOUT": "10"}
    assert "keel.W015" in _ids(short, monkeypatch)


def test_metrics_are_collected_by_default_and_served_nowhere_without_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings()
    assert settings.metrics.enabled
    assert settings.metrics.token is None
    assert settings.metrics.directory is None  # the runtime picks one per deployment
    monkeypatch.setenv("KEEL_METRICS", "false")
    monkeypatch.setenv("KEEL_METRICS_DIR", "/run/keel/metrics")
    monkeypatch.setenv("KEEL_METRICS_TOKEN", "  ")
    settings = Settings()
    assert not settings.metrics.enabled
    assert settings.metrics.token is None  # blank is unset
    assert settings.metrics.directory == "/run/keel/metrics"


@pytest.mark.parametrize(
    ("token", "finding"),
    [
        ("Mt-4vQ9zX2kLw7Rp3Yn8Bc1Hd6Fs0GaUeJi", None),
        ("Mt-4vQ9zX2kLw7Rp3Yn8Bc1Hd6Fs0G", "keel.E050"),
        ("changeme-changeme-changeme-changeme", "keel.E051"),
        ("a" * 40, "keel.E051"),
    ],
)
def test_a_short_or_guessable_metrics_token_is_an_error_everywhere(
    monkeypatch: pytest.MonkeyPatch, token: str, finding: str | None
) -> None:
    ids = {"keel.E050", "keel.E051"}
    assert _ids(PRODUCTION_OK, monkeypatch) & ids == set()
    assert _ids({**PRODUCTION_OK, "KEEL_METRICS_TOKEN": token}, monkeypatch) & ids == (
        {finding} if finding else set()
    )
    monkeypatch.setenv("KEEL_ENV", "development")
    findings = [f for f in run_checks(Settings()) if f.id in ids]
    assert [f.id for f in findings] == ([finding] if finding else [])
    assert all(f.is_error and token not in str(f) for f in findings)
