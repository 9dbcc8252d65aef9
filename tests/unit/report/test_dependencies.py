"""The dependency claim: pip-audit's JSON judged, and "not checked" whenever nothing was audited."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from keel.report import dependencies
from keel.report.claim import Outcome
from keel.report.dependencies import dependencies_have_no_known_vulnerability, judge


def _report(*deps: Mapping[str, object]) -> str:
    return json.dumps({"dependencies": list(deps), "fixes": []})


CLEAN = {"name": "pyjwt", "version": "2.13.0", "vulns": []}
SKIPPED = {"name": "keel", "skip_reason": "Dependency not found on PyPI and could not be audited"}


def test_a_clean_audit_passes_and_names_what_it_could_not_audit() -> None:
    verdict = judge(0, _report(CLEAN, SKIPPED), "")
    assert verdict.outcome is Outcome.PASS
    assert verdict.evidence == (
        "1 packages audited, none with a known vulnerability; not audited: keel"
    )


def test_a_known_vulnerability_fails() -> None:
    vulnerable = {"name": "h11", "version": "0.14.0", "vulns": [{"id": "GHSA-vqfr-h8mv-ghfj"}]}
    verdict = judge(1, _report(CLEAN, vulnerable), "")
    assert verdict.outcome is Outcome.FAIL
    assert verdict.evidence == "1 vulnerable package(s): h11 0.14.0 (GHSA-vqfr-h8mv-ghfj)"


def test_a_run_that_audited_nothing_is_not_a_pass() -> None:
    # What a machine without the vulnerability service gets: exit 0, nothing audited.
    offline = {"name": "pyjwt", "skip_reason": "could not reach the vulnerability service"}
    verdict = judge(0, _report(offline, SKIPPED), "")
    assert verdict.outcome is Outcome.NOT_CHECKED
    assert "audited no package (2 skipped)" in verdict.evidence


def test_a_run_without_a_report_is_not_checked() -> None:
    verdict = judge(1, "", "ConnectionError: HTTPSConnectionPool(host='pypi.org')\n")
    assert verdict.outcome is Outcome.NOT_CHECKED
    assert verdict.evidence.startswith("pip-audit exited 1 without a report: ConnectionError")


def test_without_pip_audit_the_claim_is_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dependencies, "find_pip_audit", lambda: None)
    verdict = dependencies_have_no_known_vulnerability()
    assert verdict.outcome is Outcome.NOT_CHECKED
    assert verdict.evidence.startswith("pip-audit is not installed")


def test_pip_audit_on_the_path_runs_against_keels_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for pip-audit (the real one needs the network): it answers only
    # when asked for JSON about this interpreter's environment.
    script = tmp_path / "pip-audit"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"assert os.environ['PIPAPI_PYTHON_LOCATION'] == {sys.executable!r}\n"
        "assert sys.argv[1:3] == ['--format', 'json']\n"
        f"print({_report(CLEAN)!r})\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    verdict = dependencies_have_no_known_vulnerability()
    assert verdict.outcome is Outcome.PASS, verdict
    assert verdict.evidence == "1 packages audited, none with a known vulnerability"
