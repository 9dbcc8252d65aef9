"""The whole start-up check list: ``keel.checks`` plus the findings about key material.

``keel.checks`` (L1) judges settings alone; whether a key file can be read, or
a secret is strong enough to sign with, needs the primitives here (L2), so the
complete list is assembled at this layer. ``keel check``, ``keel serve`` and
``create_app`` all use ``all_findings``.
"""

from __future__ import annotations

from typing import Literal

from keel.checks import Finding, run_checks
from keel.security.keys import key_findings
from keel.settings import Settings

__all__ = ["all_findings"]


def all_findings(settings: Settings) -> list[Finding]:
    """Every configuration finding for ``settings``, errors first."""
    findings = run_checks(settings)
    for finding_id, message, hint in key_findings(
        settings.tokens, production=settings.is_production
    ):
        level: Literal["error", "warning"] = "error" if finding_id.startswith("E") else "warning"
        findings.append(Finding(f"keel.{finding_id}", level, message, hint))
    return sorted(findings, key=lambda f: (not f.is_error, f.id))
