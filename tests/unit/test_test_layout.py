"""The test suite's own house rules: a test module never imports another test module.

What several test modules share lives in a support module (``_name.py``) or a
``conftest.py``; importing ``test_x`` from ``test_y`` would run or skip one
file's tests because of another's and hide where a fixture comes from.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            found.append(base)
            if not base or node.level:
                found.extend(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return found


def _test_module_imports(roots: list[Path]) -> list[str]:
    offenders = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for name in _imported_modules(path):
                if name.rsplit(".", 1)[-1].startswith("test_"):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    return offenders


def test_no_test_module_imports_another_test_module() -> None:
    assert _test_module_imports([TESTS, ROOT / "examples"]) == []


def test_the_rule_sees_an_import_of_a_test_module(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("from .test_b import HELPER\n", encoding="utf-8")
    (tmp_path / "test_c.py").write_text("import tests.db.test_ping\n", encoding="utf-8")
    (tmp_path / "test_d.py").write_text("from tests._net import closed_port\n", encoding="utf-8")
    found = _imported_modules(tmp_path / "test_a.py") + _imported_modules(tmp_path / "test_c.py")
    assert ".test_b" in found or "test_b" in found
    assert "tests.db.test_ping" in found
    assert not [n for n in _imported_modules(tmp_path / "test_d.py") if "test_" in n.split(".")[-1]]
