"""Each setting is declared once: one field of one section, named by its variable.

The variables ``Settings`` reads, the sections' fields and the README's
settings table are three views of one list; these tests keep them equal.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import re
import typing
from pathlib import Path
from typing import Annotated

import pytest

from keel.checks import load_settings
from keel.settings import SessionSettings, Settings, variables
from keel.settings._declare import env, flat_name, is_section, walk
from tests._environment import PLATFORM_VARIABLES

ROOT = Path(__file__).resolve().parents[3]


pytestmark = pytest.mark.usefixtures("clean_environment")


def _sections() -> list[type]:
    hints = typing.get_type_hints(Settings)
    return [hints[name] for name in Settings.model_fields if is_section(hints[name])]


def test_every_variable_is_declared_by_exactly_one_field() -> None:
    found = [
        variable for section in _sections() for _, variable in walk(section) if variable is not None
    ]
    found += [
        info.validation_alias
        for info in Settings.model_fields.values()
        if isinstance(info.validation_alias, str)
    ]
    twice = [name for name, count in collections.Counter(found).items() if count > 1]
    assert twice == []
    assert set(found) == set(variables())
    assert len(variables()) >= 100
    for name in variables():
        assert name.startswith("KEEL_") or name in PLATFORM_VARIABLES, name


def test_every_section_field_names_its_variable_or_is_derived() -> None:
    # walk() raises on a field that is neither; every section passes.
    for section in _sections():
        assert list(walk(section))

    @dataclasses.dataclass(frozen=True)
    class Careless:
        declared: Annotated[int, env("KEEL_DECLARED")] = 1
        forgotten: int = 2

    with pytest.raises(TypeError, match="forgotten"):
        list(walk(Careless))


def test_the_readme_settings_table_lists_exactly_the_declared_variables() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.split("## Configuration", 1)[1].splitlines()
    start = lines.index("| variable | default | meaning |") + 2
    rows = [line for line in itertools.takewhile(lambda line: line.startswith("|"), lines[start:])]
    documented: list[str] = []
    for row in rows:
        documented += re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])
    assert sorted(documented) == sorted(set(documented)), "a variable has two rows"
    assert set(documented) == set(variables())


def test_a_flat_keyword_and_its_variable_land_on_the_same_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    by_keyword = Settings(session_idle_ttl=120, rate_limit_ip=7, cors_max_age=5)
    monkeypatch.setenv("KEEL_SESSION_IDLE_TTL", "120")
    monkeypatch.setenv("keel_rate_limit_ip", "7")  # names are matched regardless of case
    monkeypatch.setenv("KEEL_CORS_MAX_AGE", "5")
    by_env = Settings()
    for settings in (by_keyword, by_env):
        assert settings.sessions.idle_ttl == 120
        assert settings.throttle.ip_limit == 7
        assert settings.http.cors.max_age == 5
    # A keyword wins over the environment, and so does a whole section.
    assert Settings(session_idle_ttl=300).sessions.idle_ttl == 300
    whole = SessionSettings(idle_ttl=90, absolute_ttl=600, refresh_grace=1.0)
    assert Settings(sessions=whole).sessions == whole
    assert flat_name("KEEL_SESSION_IDLE_TTL") == "session_idle_ttl"
    assert flat_name("DATABASE_URL") == "database_url"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KEEL_SESSION_IDLE_TTL", "soon"),
        ("KEEL_CORS_MAX_AGE", "-1"),
        ("WEB_CONCURRENCY", "many"),
        ("KEEL_JWT_LEEWAY", "61"),
    ],
)
def test_an_invalid_value_is_e000_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    settings, findings = load_settings()
    assert settings is None
    assert [f.id for f in findings] == ["keel.E000"]
    assert f"invalid setting {variable}:" in findings[0].message
    assert value not in str(findings[0])


def test_values_that_depend_on_other_settings_are_computed_when_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    development = Settings(database_url="sqlite:////srv/app.db")
    assert development.cache.state_file == "/srv/app.db-state"
    assert development.server.drain_seconds == 0.0
    assert development.http.docs_enabled
    assert not development.http.require_https
    assert development.tokens.issuer == "keel"
    production = Settings(
        env="production",
        public_url="https://id.example.com/",
        database_url="postgresql://u@db/x",
        database_sslmode="require",
        service_name="acme",
    )
    assert production.server.drain_seconds == 5.0
    assert not production.http.docs_enabled
    assert production.http.require_https
    assert production.tokens.issuer == "https://id.example.com"
    assert production.passwords.service_name == "acme"
    assert production.database.url.get_secret_value().endswith("?sslmode=require")
    assert production.cache.state_file == "var/keel-state.sqlite3"
    assert Settings(env="production", drain_seconds=0).server.drain_seconds == 0.0
    assert Settings(max_body_bytes=2048, max_auth_body_bytes=4096).http.max_auth_body_bytes == 2048
    # Sections are plain values: reading one rebuilds nothing.
    assert production.http is production.http
