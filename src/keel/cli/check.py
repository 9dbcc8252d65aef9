"""``keel check``: configuration findings with stable ids; non-zero exit on any error."""

from __future__ import annotations

import argparse
from typing import Any

from keel.checks import errors_in, load_settings
from keel.cli._output import out
from keel.security.checks import all_findings

__all__ = ["register"]


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "check", help="validate the configuration (never executes config files)"
    )
    parser.set_defaults(handler=run)


def run(_: argparse.Namespace) -> int:
    settings, findings = load_settings()
    if settings is not None:
        findings = all_findings(settings)
    for finding in findings:
        out(str(finding))
    errors = len(errors_in(findings))
    warnings = len(findings) - errors
    env = settings.env if settings is not None else "unknown"
    out(f"keel check ({env}): {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0
