from __future__ import annotations

from keel.security.checks import all_findings
from keel.settings import Settings

GOOD = "Zq3v9LmX2pT7wR4yK8nB1cF6hJ0dS5gA-uE_iO"


def test_sec_34_weak_hs256_secret_is_a_startup_error() -> None:
    for weak in ("secret", "0123456789abcdef"):
        settings = Settings(
            env="production",
            secret_key=GOOD,
            audit_key=GOOD[::-1],
            database_url="postgresql://keel@127.0.0.1/keel",
            jwt_algorithm="HS256",
            jwt_secret=weak,
        )
        ids = {f.id for f in all_findings(settings) if f.is_error}
        assert "keel.E016" in ids


def test_sec_34_production_without_a_signing_key_is_an_error() -> None:
    settings = Settings(
        env="production",
        secret_key=GOOD,
        audit_key=GOOD[::-1],
        database_url="postgresql://keel@127.0.0.1/keel",
    )
    findings = all_findings(settings)
    assert "keel.E015" in {f.id for f in findings if f.is_error}
    assert [f.is_error for f in findings] == sorted((f.is_error for f in findings), reverse=True)


def test_development_without_a_signing_key_has_no_key_finding() -> None:
    # keel serve and keel dev give every worker one development key file (W009 is retired).
    ids = {f.id for f in all_findings(Settings())}
    assert not ids & {"keel.E015", "keel.W009"}
