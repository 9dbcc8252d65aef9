"""``keel keys generate|rotate|show`` as a user runs them: real subprocesses in a temp dir."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


def keel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _show(path: Path) -> dict[str, list[dict[str, str]]]:
    result = keel("keys", "show", "--file", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stderr
    jwks: dict[str, list[dict[str, str]]] = json.loads(result.stdout)
    return jwks


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_generate_rotate_show(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "jwt-keys.json"
    generated = keel(
        "keys", "generate", "--file", path.name, "--algorithm", algorithm, cwd=tmp_path
    )
    assert generated.returncode == 0, generated.stderr
    first_kid = generated.stdout.strip()
    assert _mode(path) == 0o600
    private = json.loads(path.read_text())
    assert private["current"]["kid"] == first_kid
    secret_part = private["current"]["d"]

    shown = _show(path)
    assert [jwk["kid"] for jwk in shown["keys"]] == [first_kid]
    assert shown["keys"][0]["alg"] == algorithm

    rotated = keel("keys", "rotate", "--file", path.name, cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    second_kid = rotated.stdout.strip()
    assert second_kid != first_kid
    assert _mode(path) == 0o600
    assert [jwk["kid"] for jwk in _show(path)["keys"]] == [second_kid, first_kid]

    third = keel("keys", "rotate", "--file", path.name, cwd=tmp_path)
    third_kid = third.stdout.strip()
    shown = _show(path)
    assert [jwk["kid"] for jwk in shown["keys"]] == [third_kid, second_kid]
    for jwk in shown["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk)
    assert secret_part not in json.dumps(shown)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "no temporary files"


def test_generate_defaults_to_eddsa_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    assert keel("keys", "generate", "--file", str(path), cwd=tmp_path).returncode == 0
    before = path.read_bytes()
    assert _show(path)["keys"][0]["crv"] == "Ed25519"
    again = keel("keys", "generate", "--file", str(path), cwd=tmp_path)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    assert path.read_bytes() == before


def test_show_and_rotate_fail_in_one_line_on_a_missing_or_bad_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"current": {"kty": "oct", "k": "c2hvcnQ"}}')
    for name in ("absent.json", "bad.json"):
        for action in ("show", "rotate"):
            result = keel("keys", action, "--file", name, cwd=tmp_path)
            assert result.returncode == 1
            assert result.stderr.count("\n") == 1, result.stderr
            assert "[configuration_error]" in result.stderr
            assert "c2hvcnQ" not in result.stderr


def test_hs256_key_files_publish_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    result = keel("keys", "generate", "--file", path.name, "--algorithm", "HS256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _show(path) == {"keys": []}


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert keel("keys", cwd=tmp_path).returncode == 2
    assert keel("keys", "generate", cwd=tmp_path).returncode == 2
    assert (
        keel("keys", "generate", "--file", "k", "--algorithm", "RS256", cwd=tmp_path).returncode
        == 2
    )
    assert not (tmp_path / "k").exists()
