"""keel.report: ``keel security-report``, the security summary made of checks that can fail.

Each claim of the summary is decided by a check run when the report is made
(:mod:`keel.report.runner` lists them): configuration findings, the audit
chain, the migration state, signing-key age and rotation, a dependency audit,
and, against a running instance, live probes of its headers, CORS, methods,
limits, request framing, error bodies and documentation pages. A check that
cannot run is "not checked", never "pass". :mod:`keel.report.render` writes
SECURITY_SUMMARY.md and security-summary.json.
"""

from keel.report.claim import Check, Claim, Outcome, Verdict
from keel.report.render import claims_in_markdown, to_json, to_markdown, write_report
from keel.report.runner import Report, checks, run_report

__all__ = [
    "Check",
    "Claim",
    "Outcome",
    "Report",
    "Verdict",
    "checks",
    "claims_in_markdown",
    "run_report",
    "to_json",
    "to_markdown",
    "write_report",
]
