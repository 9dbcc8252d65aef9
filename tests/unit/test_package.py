"""The package's shape: layering kept, nothing happens at import, a pinned public surface."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keel

ROOT = Path(__file__).resolve().parents[2]


def _all_modules() -> list[str]:
    names = ["keel"]
    for info in pkgutil.walk_packages(keel.__path__, prefix="keel."):
        if ".migrations.versions" in info.name or info.name.endswith(".migrations.env"):
            continue  # Alembic scripts run only under Alembic.
        names.append(info.name)
    return sorted(names)


def test_layering_contracts_hold() -> None:
    """keel's layers, as import-linter contracts in pyproject.toml."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_layering_contract_catches_a_back_edge(tmp_path: Path) -> None:
    """The same contract over a copy of keel with one forbidden import must fail."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "keel", copy / "keel")
    bad = copy / "keel" / "settings" / "__init__.py"
    bad.write_text(bad.read_text() + "\nfrom keel.api import app as _app  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = subprocess.run(
        [lint_imports, "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)},
    )
    assert result.returncode != 0
    assert "keel.settings -> keel.api" in result.stdout


def test_importing_every_module_connects_to_nothing_and_starts_nothing() -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, importlib, socket, threading
        def refuse(*a, **k):
            raise AssertionError("socket opened at import")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        before = threading.active_count()
        for name in {_all_modules()!r}:
            importlib.import_module(name)
        assert threading.active_count() == before, "a thread was started at import"
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise AssertionError("a loop is running")
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_module_declares_its_public_names() -> None:
    for name in _all_modules():
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        if name.endswith("__main__"):
            continue
        assert exported is not None, f"{name} has no __all__"
        for item in exported:
            assert hasattr(module, item), f"{name}.__all__ names missing {item}"


def test_create_app_is_the_entry_point() -> None:
    from keel.api import app

    assert app.__all__ == ["create_app"]
    assert not hasattr(app, "app"), "no app instance at module level"


#: A module longer than this is split by what it does (one owner, one purpose each).
MAX_MODULE_LINES = 400


def test_no_module_is_longer_than_the_limit() -> None:
    sources = [*(ROOT / "src" / "keel").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]
    long = {
        str(path.relative_to(ROOT)): count
        for path in sources
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert sources
    assert long == {}
