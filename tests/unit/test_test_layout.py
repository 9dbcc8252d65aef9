"""The test suite's own house rules.

- A test module never imports another test module or a conftest. What several
  test modules share lives in a support module (``_name.py``), fixtures in a
  ``conftest.py``; importing ``test_x`` from ``test_y`` would run or skip one
  file's tests because of another's, and importing from a conftest (which pytest
  loads itself, under its own module name) hides where a fixture comes from and
  can load the file twice.
- No fixture name is defined in two conftest (or ``pytest_plugins``) files: a
  fixture more than one directory uses lives in ``tests/conftest.py``, and a
  directory's conftest keeps only its own, under names no other conftest uses, so
  a fixture's name says which one a test gets.
- ``tests/unit`` mirrors ``src/keel``: each directory names a package, and a
  module at the top of ``tests/unit`` tests a top-level module (``test_checks.py``
  for ``checks.py``, ``test_logging_statements.py`` for ``_logging.py``) or is one
  of the few listed in ``UNIT_TOP_LEVEL``.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
PACKAGE = ROOT / "src" / "keel"

# Top-level unit test modules that test no one module of keel.
UNIT_TOP_LEVEL = {
    "test_docs.py": "the repository's documents",
    "test_package.py": "the package as a whole: layering, imports, public surface",
    "test_test_layout.py": "the test suite's own layout",
}


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


def _forbidden(module: str) -> bool:
    """Whether importing ``module`` breaks the rule: a test module or a conftest."""
    parts = module.split(".")
    return any(part.startswith("test_") or part == "conftest" for part in parts)


def _test_module_imports(roots: list[Path]) -> list[str]:
    offenders = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for name in _imported_modules(path):
                if _forbidden(name):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    return offenders


def test_no_test_module_imports_another_test_module_or_a_conftest() -> None:
    assert _test_module_imports([TESTS, ROOT / "examples"]) == []


def test_the_rule_sees_an_import_of_a_test_module(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("from .test_b import HELPER\n", encoding="utf-8")
    (tmp_path / "test_c.py").write_text("import tests.db.test_ping\n", encoding="utf-8")
    (tmp_path / "test_d.py").write_text("from tests._net import closed_port\n", encoding="utf-8")
    (tmp_path / "test_e.py").write_text("from .conftest import World\n", encoding="utf-8")
    (tmp_path / "test_f.py").write_text("from tests.api._serve import serve\n", encoding="utf-8")
    assert any(map(_forbidden, _imported_modules(tmp_path / "test_e.py")))
    assert not any(map(_forbidden, _imported_modules(tmp_path / "test_f.py")))
    found = _imported_modules(tmp_path / "test_a.py") + _imported_modules(tmp_path / "test_c.py")
    assert ".test_b" in found or "test_b" in found
    assert "tests.db.test_ping" in found
    assert not [n for n in _imported_modules(tmp_path / "test_d.py") if "test_" in n.split(".")[-1]]


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return name == "fixture"


def _fixture_name(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    for decorator in function.decorator_list:
        if not _is_fixture(decorator):
            continue
        if isinstance(decorator, ast.Call):
            for keyword in decorator.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
        return function.name
    return None


def _plugin_files(conftests: list[Path], root: Path) -> list[Path]:
    """The modules that conftests name in ``pytest_plugins``."""
    found: list[Path] = []
    for conftest in conftests:
        tree = ast.parse(conftest.read_text(encoding="utf-8"), filename=str(conftest))
        for node in tree.body:
            if not isinstance(node, ast.Assign):
                continue
            if not any(isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets):
                continue
            names = (
                node.value.elts if isinstance(node.value, ast.List | ast.Tuple) else [node.value]
            )
            for name in names:
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    module = root.joinpath(*name.value.split("."))
                    package = module / "__init__.py"
                    found.append(package if package.exists() else module.with_suffix(".py"))
    return found


def _fixture_definitions(tests: Path) -> dict[str, list[str]]:
    """Each fixture name defined (or imported from another) in a conftest or plugin, and where."""
    conftests = sorted(tests.rglob("conftest.py"))
    files = conftests + _plugin_files(conftests, tests.parent)
    defined: dict[Path, set[str]] = {}
    trees: dict[Path, ast.Module] = {}
    for path in files:
        trees[path] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        defined[path] = {
            name
            for node in trees[path].body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and (name := _fixture_name(node)) is not None
        }
    by_module = {".".join(p.relative_to(tests.parent).with_suffix("").parts): p for p in files}
    found: dict[str, list[str]] = {}
    for path in files:
        names = set(defined[path])
        for node in trees[path].body:
            if isinstance(node, ast.ImportFrom) and node.module in by_module:
                source = defined[by_module[node.module]]
                names.update(
                    alias.asname or alias.name for alias in node.names if alias.name in source
                )
        for name in names:
            found.setdefault(name, []).append(str(path.relative_to(tests.parent)))
    return found


def _defined_twice(tests: Path) -> dict[str, list[str]]:
    return {
        name: sorted(paths)
        for name, paths in sorted(_fixture_definitions(tests).items())
        if len(paths) > 1
    }


def test_no_fixture_name_is_defined_in_two_conftests() -> None:
    assert _defined_twice(TESTS) == {}


def test_the_rule_sees_a_fixture_defined_in_two_conftests(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    for folder, body in {
        "": 'pytest_plugins = ["tests.fixtures"]\n',
        "a": "@pytest.fixture(params=[1, 2])\ndef database(): ...\n",
        "b": "@fixture\nasync def database(): ...\n@pytest.fixture(name='store')\ndef s(): ...\n",
        "c": "from tests.a.conftest import database\n@pytest.fixture\ndef own(): ...\n",
        "d": "def database(): ...\n",  # not a fixture
    }.items():
        (tests / folder).mkdir(parents=True, exist_ok=True)
        (tests / folder / "conftest.py").write_text(body, encoding="utf-8")
    (tests / "fixtures.py").write_text("@pytest.fixture\ndef store(): ...\n", encoding="utf-8")
    (tests / "a" / "test_x.py").write_text("@pytest.fixture\ndef own(): ...\n", encoding="utf-8")
    assert _defined_twice(tests) == {
        "database": ["tests/a/conftest.py", "tests/b/conftest.py", "tests/c/conftest.py"],
        "store": ["tests/b/conftest.py", "tests/fixtures.py"],
    }


def _top_level_module(test_file: str, package: Path) -> str | None:
    """The top-level module of ``package`` that ``test_<name>[_more].py`` names, if any."""
    parts = test_file.removeprefix("test_").removesuffix(".py").split("_")
    for end in range(len(parts), 0, -1):
        stem = "_".join(parts[:end])
        for name in (f"{stem}.py", f"_{stem}.py"):
            if (package / name).is_file():
                return name
    return None


def _unmirrored(unit: Path, package: Path) -> list[str]:
    """What under ``unit`` does not mirror ``package``."""
    offenders = []
    for folder in sorted(unit.rglob("*")):
        if not folder.is_dir() or folder.name == "__pycache__":
            continue
        relative = folder.relative_to(unit)
        if not (package / relative / "__init__.py").is_file():
            offenders.append(f"{relative}/ names no package under {package.name}/")
    for test in sorted(unit.glob("test_*.py")):
        if test.name not in UNIT_TOP_LEVEL and _top_level_module(test.name, package) is None:
            offenders.append(f"{test.name} names no top-level module of {package.name}")
    return offenders


def test_unit_tests_mirror_the_package() -> None:
    assert _unmirrored(TESTS / "unit", PACKAGE) == []


def test_the_rule_sees_a_unit_test_out_of_place(tmp_path: Path) -> None:
    package, unit = tmp_path / "keel", tmp_path / "unit"
    for folder in (package / "db", package / "db" / "migrations", package / "settings"):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("", encoding="utf-8")
    for module in ("checks.py", "_logging.py"):
        (package / module).write_text("", encoding="utf-8")
    for mirror in ("db/migrations", "settings", "sessions", "db/__pycache__"):
        (unit / mirror).mkdir(parents=True)
    for test in ("test_checks.py", "test_logging_statements.py", "test_package.py"):
        (unit / test).write_text("", encoding="utf-8")
    (unit / "test_settings.py").write_text("", encoding="utf-8")  # a package: unit/settings/
    (unit / "test_stuff.py").write_text("", encoding="utf-8")
    assert _unmirrored(unit, package) == [
        "sessions/ names no package under keel/",
        "test_settings.py names no top-level module of keel",
        "test_stuff.py names no top-level module of keel",
    ]
