"""The configuration claim: ``keel check`` finds no error in the configured settings."""

from __future__ import annotations

from keel.checks import errors_in
from keel.report.claim import Verdict, failed, passed
from keel.security.checks import all_findings
from keel.settings import Settings

__all__ = ["configuration_has_no_error"]


def configuration_has_no_error(settings: Settings) -> Verdict:
    """Every ``keel check`` finding: a fail line naming each error, warnings listed on a pass."""
    findings = all_findings(settings)
    errors = errors_in(findings)
    where = f"KEEL_ENV={settings.env}"
    if errors:
        listed = "; ".join(f"{f.id} {f.message}" for f in errors)
        return failed(f"{where}: {len(errors)} error(s): {listed}")
    warnings = [f.id for f in findings if not f.is_error]
    noted = f"warnings {', '.join(warnings)}" if warnings else "no warning"
    return passed(f"{where}: no error, {noted}")
