"""The schema revisions this code expects, known without importing Alembic.

keel's own revisions form the ``keel`` branch (label on ``0001``), recorded in
the version table ``keel_alembic_version``. An application adds its revisions
in packages named by ``KEEL_MIGRATIONS`` (importable package names, each a
directory of Alembic revision files); they join the same graph, and every
head of that graph is what ``keel db upgrade`` migrates to.

The running app compares the database against those heads at start-up.
Importing Alembic on a worker's event loop would stall it for a second or
more, so the heads are read here from the revision files' text (their
``revision`` and ``down_revision`` lines), a few milliseconds for a few dozen
files. ``HEAD_REVISION`` is keel's own head; a test keeps both equal to what
Alembic computes.
"""

from __future__ import annotations

import ast
import importlib.util
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from keel.errors import ConfigurationError

__all__ = [
    "HEAD_REVISION",
    "KEEL_BRANCH",
    "KEEL_VERSIONS_DIR",
    "LEGACY_VERSION_TABLE",
    "VERSION_TABLE",
    "expected_heads",
    "package_directory",
    "revisions_in",
    "schema_is_current",
    "version_directories",
]

HEAD_REVISION: Final = "0007"
KEEL_BRANCH: Final = "keel"
VERSION_TABLE: Final = "keel_alembic_version"
#: Where keel recorded its revision before the version table was named (adopted at upgrade).
LEGACY_VERSION_TABLE: Final = "alembic_version"
KEEL_VERSIONS_DIR: Final = Path(__file__).resolve().with_name("migrations") / "versions"


def package_directory(name: str) -> Path:
    """The directory of the importable package ``name``: its revision files."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise ConfigurationError(f"KEEL_MIGRATIONS names {name!r}, which cannot be found") from exc
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigurationError(
            f"KEEL_MIGRATIONS names {name!r}, which is not a package (a directory of revisions)"
        )
    return Path(locations[0]).resolve()


def version_directories(packages: Sequence[str]) -> list[Path]:
    """keel's revision directory, then each application package's."""
    return [KEEL_VERSIONS_DIR, *(package_directory(name) for name in packages)]


def _assigned(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id == name and value is not None:
            try:
                return ast.literal_eval(value)
            except ValueError:
                return None
    return None


def _names(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(str(item) for item in value)
    return ()


# CPython 3.11 keeps the AST conversion's recursion depth in per-interpreter state: two
# threads converting at once (a warm-up's schema check in a worker thread and a caller's
# check, say) can fail with "SystemError: AST constructor recursion depth mismatch".
_PARSE_LOCK: Final = threading.Lock()


def _parse(path: Path) -> ast.Module:
    source = path.read_text(encoding="utf-8")
    with _PARSE_LOCK:
        return ast.parse(source, filename=str(path))


def _revisions(directory: Path) -> Iterable[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(revision, down revisions, depends-on revisions) for each revision file in ``directory``."""
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = _parse(path)
        revision = _assigned(tree, "revision")
        if isinstance(revision, str):
            yield (
                revision,
                _names(_assigned(tree, "down_revision")),
                _names(_assigned(tree, "depends_on")),
            )


def revisions_in(directory: Path) -> frozenset[str]:
    """The revision ids of the files in ``directory``."""
    return frozenset(revision for revision, _, _ in _revisions(directory))


def _graph(packages: Sequence[str]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    return {
        revision: (down, depends)
        for directory in version_directories(packages)
        for revision, down, depends in _revisions(directory)
    }


def expected_heads(packages: Sequence[str] = ()) -> frozenset[str]:
    """The heads of keel's revisions together with the applications' (what upgrade reaches)."""
    graph = _graph(packages)
    parents = {parent for down, _ in graph.values() for parent in down}
    return frozenset(set(graph) - parents)


def schema_is_current(current: frozenset[str], packages: Sequence[str] = ()) -> bool:
    """Whether a database whose version table holds ``current`` is at every head.

    Alembic records only the revisions nothing else in the table already
    implies: an application revision that depends on keel's head stands for
    both. So the database is current when every head is one of ``current`` or
    an ancestor of one (through ``down_revision`` or ``depends_on``), and every
    revision it holds is one this code knows (a database migrated by newer
    code is not current either).
    """
    graph = _graph(packages)
    if not current or not current <= graph.keys():
        return False
    covered: set[str] = set()
    stack = list(current)
    while stack:
        revision = stack.pop()
        if revision in covered:
            continue
        covered.add(revision)
        down, depends = graph.get(revision, ((), ()))
        stack.extend(down)
        stack.extend(depends)
    return expected_heads(packages) <= covered
