"""keel as a library: the wheel carries its migrations and the password blocklist.

``uv build`` makes the wheel; a fresh virtual environment gets the locked
dependencies (``uv export --frozen --no-dev``) and the wheel, and only then,
from a directory outside the checkout (so nothing can be imported from
``src/``), ``keel check`` passes, ``keel db upgrade`` migrates a new SQLite
database to the head, and the shipped blocklist refuses a common password.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".tools" / "bin" / "uv"


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.timeout(900)
def test_the_wheel_installs_alone_and_migrates_with_its_own_files(tmp_path: Path) -> None:
    if not UV.exists():
        pytest.fail(f"{UV} is missing: run `make install` first")
    dist = tmp_path / "dist"
    _run(UV, "build", "--wheel", "--out-dir", dist, cwd=ROOT)
    (wheel,) = dist.glob("keel-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "keel/security/data/common-passwords.bin" in names
    assert "keel/db/migrations/script.py.mako" in names
    revisions = {p.name for p in (ROOT / "src/keel/db/migrations/versions").glob("0*.py")}
    assert {f"keel/db/migrations/versions/{name}" for name in revisions} <= names

    requirements = tmp_path / "requirements.txt"
    exported = _run(
        UV, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", cwd=ROOT
    )
    requirements.write_text(exported)
    venv = tmp_path / "venv"
    _run(UV, "venv", "--python", "python3", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(UV, "pip", "install", "--python", python, "-r", requirements, wheel, cwd=tmp_path)

    work = tmp_path / "service"
    work.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KEEL_", "UV_")) and key not in {"DATABASE_URL", "PYTHONPATH"}
    }
    env["DATABASE_URL"] = f"sqlite:///{work}/app.sqlite3"
    located = _run(python, "-c", "import keel; print(keel.__file__)", cwd=work, env=env)
    assert str(venv) in located  # the installed wheel, not the checkout
    _run(venv / "bin" / "keel", "check", cwd=work, env=env)
    _run(venv / "bin" / "keel", "db", "upgrade", cwd=work, env=env)
    current = _run(venv / "bin" / "keel", "db", "current", cwd=work, env=env)
    lines = current.splitlines()
    assert lines[0].split()[-1] == lines[1].split()[-1]  # at the head
    refused = _run(
        python,
        "-c",
        "from keel.security.passwords import Blocklist; "
        "print('password123' in Blocklist.shipped(), len(Blocklist.shipped()) > 1000)",
        cwd=work,
        env=env,
    )
    assert refused.split() == ["True", "True"]
