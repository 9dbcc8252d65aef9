"""Supply chain: security floors of the HTTP/JWT stack, and an SBOM that matches the lock file.

The floors are the lowest versions without a known vulnerability that matters
to keel (the advisory each one answers is named beside it). The project's
declared minimums must be at least these, and the environment the lock file
installs must meet them: a resolver that picks an older release for a user's
constraints then fails to install rather than runs vulnerable.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]

SECURITY_FLOORS: dict[str, tuple[str, str]] = {
    "h11": ("0.16.0", "CVE-2025-43859: lenient chunked-encoding parsing, request smuggling"),
    "gunicorn": ("23.0.0", "CVE-2024-1135, CVE-2024-6827: Transfer-Encoding validation"),
    "uvicorn": ("0.11.7", "CVE-2020-7694/7695: log injection, response splitting"),
    "pyjwt": ("2.10.1", "CVE-2024-53861: issuer checked as a substring"),
    "cryptography": ("44.0.1", "CVE-2024-12797: vulnerable bundled OpenSSL"),
    "starlette": ("0.49.1", "CVE-2025-54121, CVE-2025-62727: multipart and Range DoS"),
}


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    return {requirement.name.lower(): requirement for requirement in requirements}


def _minimum(requirement: Requirement) -> Version | None:
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    return max(floors) if floors else None


@pytest.mark.parametrize("name", sorted(SECURITY_FLOORS))
def test_declared_minimums_are_at_least_the_security_floors(name: str) -> None:
    floor, advisory = SECURITY_FLOORS[name]
    requirement = _declared().get(name)
    assert requirement is not None, f"{name} is not a declared dependency ({advisory})"
    declared = _minimum(requirement)
    assert declared is not None, f"{name} has no >= minimum"
    assert declared >= Version(floor), f"{name} {declared} < {floor}: {advisory}"


@pytest.mark.parametrize("name", sorted(SECURITY_FLOORS))
def test_installed_versions_meet_the_security_floors(name: str) -> None:
    floor, advisory = SECURITY_FLOORS[name]
    assert Version(version(name)) >= Version(floor), advisory


@pytest.mark.timeout(300)
def test_make_sbom_lists_exactly_the_locked_runtime_packages(tmp_path: Path) -> None:
    subprocess.run(["make", "-s", "sbom"], cwd=ROOT, check=True, capture_output=True, timeout=280)
    sbom = json.loads((ROOT / "sbom.cdx.json").read_text())
    locked = {}
    for line in (ROOT / ".venv" / "requirements.lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, rest = line.partition("==")
            locked[name.strip().lower()] = rest.split()[0].rstrip("\\").strip()
    listed = {c["name"].lower(): c["version"] for c in sbom["components"]}
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "keel"
    assert listed == locked
    assert {"fastapi", "sqlalchemy", "pyjwt", "argon2-cffi"} <= listed.keys()
    assert all(c["purl"].startswith("pkg:pypi/") for c in sbom["components"])
