"""The ``keel security-report`` handler (imported only when the command runs)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from keel._clock import SystemClock
from keel._logging import configure_logging
from keel.cli._output import err, out, settings_or_exit
from keel.report import Outcome, run_report, to_json, write_report

__all__ = ["security_report"]


def security_report(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    configure_logging(settings.server.log_level, stream=sys.stderr)
    report = asyncio.run(run_report(settings, SystemClock(), args.url))
    markdown, document = write_report(report, args.out)
    if args.json:
        out(json.dumps(to_json(report), indent=2))
    else:
        for claim in report.claims:
            out(f"{claim.outcome.value.upper():<11} {claim.id}: {claim.claim} - {claim.evidence}")
    totals = ", ".join(f"{report.count(o)} {o.value}" for o in Outcome)
    err(f"keel security-report: {totals}; wrote {markdown} and {document}")
    unchecked = args.strict and report.count(Outcome.NOT_CHECKED) > 0
    return 1 if report.failed or unchecked else 0
