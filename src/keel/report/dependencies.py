"""The dependency claim: no installed package has a known vulnerability (pip-audit).

pip-audit is not a dependency of keel: it runs when it is installed (on
``PATH`` or beside this interpreter). It asks a vulnerability service over
the network; when the service cannot be reached it may still exit 0 and say
it found nothing, so a run in which no package was actually audited is
"not checked", never a pass. It audits this interpreter's environment
(``PIPAPI_PYTHON_LOCATION``), the one keel runs from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from keel.report.claim import Verdict, failed, not_checked, passed

__all__ = ["PIP_AUDIT_TIMEOUT", "dependencies_have_no_known_vulnerability", "find_pip_audit"]

PIP_AUDIT_TIMEOUT: Final = 120.0


def find_pip_audit() -> str | None:
    """The pip-audit executable: on ``PATH``, else beside this interpreter."""
    found = shutil.which("pip-audit")
    if found:
        return found
    beside = Path(sys.executable).with_name("pip-audit")
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def judge(returncode: int, stdout: str, stderr: str) -> Verdict:
    """The verdict for one pip-audit run with ``--format json``."""
    try:
        report: Any = json.loads(stdout)
        dependencies = report["dependencies"]
        if not isinstance(dependencies, list):
            raise TypeError("dependencies is not a list")
    except (ValueError, KeyError, TypeError):
        return not_checked(f"pip-audit exited {returncode} without a report: {_last_line(stderr)}")
    audited = [d for d in dependencies if isinstance(d, dict) and "vulns" in d]
    skipped = [d.get("name", "?") for d in dependencies if isinstance(d, dict) and "vulns" not in d]
    if not audited:
        return not_checked(
            f"pip-audit audited no package ({len(skipped)} skipped): "
            "its vulnerability service did not answer"
        )
    vulnerable = [
        f"{d.get('name')} {d.get('version')} ({', '.join(v.get('id', '?') for v in d['vulns'])})"
        for d in audited
        if d["vulns"]
    ]
    if vulnerable:
        return failed(f"{len(vulnerable)} vulnerable package(s): {'; '.join(vulnerable)}")
    if returncode != 0:
        return not_checked(f"pip-audit exited {returncode}: {_last_line(stderr)}")
    unaudited = f"; not audited: {', '.join(sorted(skipped))}" if skipped else ""
    return passed(f"{len(audited)} packages audited, none with a known vulnerability{unaudited}")


def dependencies_have_no_known_vulnerability() -> Verdict:
    executable = find_pip_audit()
    if executable is None:
        return not_checked("pip-audit is not installed (`pip install pip-audit` to check)")
    env = {**os.environ, "PIPAPI_PYTHON_LOCATION": sys.executable}
    try:
        run = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [executable, "--format", "json", "--progress-spinner", "off"],
            capture_output=True,
            text=True,
            timeout=PIP_AUDIT_TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return not_checked(f"pip-audit did not finish within {PIP_AUDIT_TIMEOUT:.0f} s")
    except OSError as exc:
        return not_checked(f"pip-audit could not run: {exc.strerror or exc}")
    return judge(run.returncode, run.stdout, run.stderr)
