"""One weak-secret rule: what `keel check` refuses as SECRET_KEY the signing key refuses too."""

from __future__ import annotations

import secrets

import pytest

from keel._secrets import PLACEHOLDER_MARKERS, WELL_KNOWN_SECRETS, weakness
from keel.checks import run_checks
from keel.security.signing_key import weak_secret_reason
from keel.settings import Settings

_RANDOM = "Zq3v9LmX2pT7wR4yK8nB1cF6hJ0dS5gA"


def _secret_key_refused(secret: str) -> bool:
    settings = Settings(env="production", secret_key=secret)
    return "keel.E003" in {f.id for f in run_checks(settings)}


@pytest.mark.parametrize("marker", PLACEHOLDER_MARKERS)
def test_a_placeholder_word_is_refused_by_both_rules(marker: str) -> None:
    secret = f"{_RANDOM[:16]}{marker}{_RANDOM[16:]}"
    assert weak_secret_reason(secret) == "looks like a placeholder"
    assert _secret_key_refused(secret)


@pytest.mark.parametrize("known", sorted(WELL_KNOWN_SECRETS))
def test_a_well_known_value_repeated_to_length_is_refused_by_both_rules(known: str) -> None:
    secret = known * (64 // len(known) + 1)
    assert weakness(secret) == "is a well-known value"
    assert weak_secret_reason(secret) is not None
    assert _secret_key_refused(secret)


def test_a_generated_secret_passes_both_rules() -> None:
    for _ in range(20):
        secret = secrets.token_urlsafe(48)
        if any(marker in secret.lower() for marker in PLACEHOLDER_MARKERS):
            continue  # a random value may spell a marker; that is the rule, not a flaw
        assert weakness(secret) is None
        assert weak_secret_reason(secret) is None
        assert not _secret_key_refused(secret)


def test_low_randomness_is_refused_by_both_rules() -> None:
    secret = "ab" * 24
    assert weakness(secret) == "has too little randomness"
    assert _secret_key_refused(secret)
