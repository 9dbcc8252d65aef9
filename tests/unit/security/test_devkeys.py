"""keel.security.devkeys: the one development key file every worker of a server uses."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from keel.errors import ConfigurationError
from keel.security.devkeys import (
    DEVELOPMENT_KEY_FILE,
    development_key_file,
    has_configured_key,
)
from keel.security.keys import KeySet, load_key_file, write_key_file
from tests.unit.auth._support import token_settings

RACERS = 6


def test_created_once_with_mode_0600_then_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = development_key_file(token_settings())
    assert first.created
    assert first.path == tmp_path / DEVELOPMENT_KEY_FILE
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.path.parent.stat().st_mode) == 0o700
    assert load_key_file(first.path).current.kid == first.keys.current.kid
    again = development_key_file(token_settings())
    assert not again.created
    assert again.keys.current.kid == first.keys.current.kid
    # No temporary file is left beside it.
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]


@pytest.mark.parametrize("algorithm", ["ES256", "HS256"])
def test_the_configured_algorithm_is_used(tmp_path: Path, algorithm: str) -> None:
    settings = token_settings(algorithm)  # type: ignore[arg-type]
    assert development_key_file(settings, tmp_path / "k.json").keys.algorithm == algorithm


# One server starting: key generation is slowed down so that every racer has looked for
# the file, found none and made a key of its own before any of them writes it.
_RACER = """
import sys, time
from pathlib import Path
from keel.security import keys
from keel.security.devkeys import development_key_file
from tests.unit.auth._support import token_settings
fast = keys.KeySet.generate
def slow(algorithm):
    made = fast(algorithm)
    time.sleep(0.5)
    return made
keys.KeySet.generate = slow
print("ready", flush=True)
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
result = development_key_file(token_settings(), Path(sys.argv[2]))
print(result.keys.current.kid, result.created)
"""


def test_servers_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    go, target = tmp_path / "go", tmp_path / "var" / "keys.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(go), str(target)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(RACERS)
    ]
    for racer in racers:
        assert racer.stdout is not None
        assert racer.stdout.readline() == "ready\n"
    go.touch()
    answers = [racer.communicate(timeout=60)[0].split() for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    assert {kid for kid, _ in answers} == {load_key_file(target).current.kid}
    assert sorted(created for _, created in answers) == ["False"] * (RACERS - 1) + ["True"]


def test_a_file_of_another_algorithm_is_refused_naming_the_file(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    development_key_file(token_settings("EdDSA"), target)
    with pytest.raises(ConfigurationError) as caught:
        development_key_file(token_settings("ES256"), target)
    assert str(target) in caught.value.message
    assert "holds EdDSA keys but KEEL_JWT_ALGORITHM is ES256" in caught.value.message
    assert "delete it" in caught.value.message


def test_a_damaged_file_is_refused_and_never_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    target.write_text("{not json")
    with pytest.raises(ConfigurationError, match="is not JSON; delete it"):
        development_key_file(token_settings(), target)
    assert target.read_text() == "{not json"


def test_a_place_that_cannot_hold_the_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file, not a directory")
    with pytest.raises(ConfigurationError, match="set KEEL_JWT_KEY_FILE"):
        development_key_file(token_settings(), tmp_path / "var" / "keys.json")


def test_a_readable_existing_file_is_used_as_it_is(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    keys = KeySet.generate("EdDSA")
    write_key_file(target, keys)
    assert development_key_file(token_settings(), target).keys.current.kid == keys.current.kid


def test_any_key_setting_counts_as_configured() -> None:
    bare = token_settings()
    assert not has_configured_key(bare)
    assert has_configured_key(dataclasses.replace(bare, key_file="/k.json"))
    assert has_configured_key(dataclasses.replace(bare, private_key=SecretStr("pem")))
    assert has_configured_key(dataclasses.replace(bare, hmac_secret=SecretStr("s" * 40)))
