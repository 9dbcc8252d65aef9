"""keel.accounts.config: links only from KEEL_PUBLIC_URL; production insists on one."""

from __future__ import annotations

import pytest

from keel.accounts.config import AccountSettings, account_settings_from
from keel.errors import ConfigurationError
from keel.settings import Settings


def test_link_puts_the_token_in_the_fragment() -> None:
    settings = AccountSettings(service_name="keel", public_url="https://app.example/")
    assert settings.link("/verify-email", "abc") == "https://app.example/verify-email#token=abc"


def test_from_settings() -> None:
    settings = account_settings_from(
        Settings(public_url="https://app.example", service_name="acme")
    )
    assert settings.public_url == "https://app.example"
    assert settings.service_name == "acme"
    assert settings.policy.require_verified_email is True
    assert settings.verification_ttl == 24 * 3600


def test_the_policy_is_the_settings_section_itself() -> None:
    settings = Settings(password_reset_ttl=600, lockout_threshold=4)
    account_settings = account_settings_from(settings)
    assert account_settings.policy is settings.accounts
    assert account_settings.policy.password_reset_ttl == 600
    assert account_settings.lockout_threshold == 4


def test_development_default_points_at_the_local_server() -> None:
    assert account_settings_from(Settings(port=8123)).public_url == "http://localhost:8123"


def test_production_needs_a_public_url() -> None:
    with pytest.raises(ConfigurationError, match="KEEL_PUBLIC_URL"):
        account_settings_from(Settings(env="production"))


def test_refuses_relative_urls() -> None:
    with pytest.raises(ConfigurationError):
        AccountSettings(service_name="keel", public_url="app.example")
