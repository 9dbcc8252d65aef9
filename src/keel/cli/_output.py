"""Writing to the terminal: the CLI's only way to speak (logs go through logging)."""

from __future__ import annotations

import sys

from keel.checks import Finding, load_settings
from keel.settings import Settings

__all__ = ["err", "out", "settings_or_exit"]


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def settings_or_exit() -> Settings:
    """Settings from the environment, or exit 1 after printing why they are invalid."""
    settings, findings = load_settings()
    if settings is None:
        _print_findings(findings)
        raise SystemExit(1)
    return settings


def _print_findings(findings: list[Finding]) -> None:
    for finding in findings:
        err(str(finding))
