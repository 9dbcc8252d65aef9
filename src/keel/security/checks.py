"""The whole start-up check list: ``keel.checks`` plus the findings about key material.

``keel.checks`` (L1) judges settings alone; whether a key file can be read, or
a secret is strong enough to sign with, needs the primitives here (L2), so the
complete list is assembled at this layer. ``keel check`` lists ``all_findings``;
``keel serve`` and ``create_app`` both refuse a production start through
``refuse_production_errors``.
"""

from __future__ import annotations

from typing import Literal

from keel.checks import Finding, errors_in, run_checks
from keel.errors import ConfigurationError
from keel.security.keys import key_findings
from keel.settings import Settings

__all__ = ["ProductionRefused", "all_findings", "refuse_production_errors"]


def all_findings(settings: Settings) -> list[Finding]:
    """Every configuration finding for ``settings``, errors first."""
    findings = run_checks(settings)
    for finding_id, message, hint in key_findings(
        settings.tokens, production=settings.is_production
    ):
        level: Literal["error", "warning"] = "error" if finding_id.startswith("E") else "warning"
        findings.append(Finding(f"keel.{finding_id}", level, message, hint))
    return sorted(findings, key=lambda f: (not f.is_error, f.id))


class ProductionRefused(ConfigurationError):
    """A production start refused while ``keel check`` reports errors (``findings``)."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        ids = ", ".join(f.id for f in findings)
        super().__init__(f"refusing to start in production: {ids} (run `keel check`)")


def refuse_production_errors(settings: Settings) -> None:
    """Raise ``ProductionRefused`` when ``settings`` are production and have errors."""
    if not settings.is_production:
        return
    errors = errors_in(all_findings(settings))
    if errors:
        raise ProductionRefused(errors)
