"""The security report: every check, run once, in a fixed order, each stamped with its UTC time.

:func:`checks` lists the claims (the same list with or without ``--url``: a
live probe without an instance is "not checked"); :func:`run_report` runs
them. A check that raises is "not checked" with the reason, never a pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from keel import __version__
from keel._clock import Clock
from keel._logging import event
from keel.db import Database
from keel.errors import KeelError
from keel.report import database as db_checks
from keel.report import framing, http_probes
from keel.report._wire import Target, Unreachable
from keel.report.claim import Check, Claim, Outcome, Verdict, not_checked
from keel.report.configuration import configuration_has_no_error
from keel.report.dependencies import dependencies_have_no_known_vulnerability
from keel.report.signing_keys import (
    SIGNING_KEY_MAX_AGE,
    STAGED_KEY_MAX_WAIT,
    rotation_is_not_stalled,
    signing_key_is_young,
)
from keel.settings import Settings

__all__ = ["Report", "checks", "run_report"]

_log = logging.getLogger("keel.report")


@dataclass(frozen=True, slots=True)
class Report:
    """Every claim with its verdict, and where and when they were checked."""

    claims: tuple[Claim, ...]
    generated_at: datetime
    environment: str
    instance: str | None
    version: str = __version__

    def count(self, outcome: Outcome) -> int:
        return sum(1 for claim in self.claims if claim.outcome is outcome)

    @property
    def failed(self) -> bool:
        return self.count(Outcome.FAIL) > 0


def _live(
    target: Target | None, settings: Settings, probe: Callable[[Target, Settings], Verdict]
) -> Callable[[], Awaitable[Verdict]]:
    async def run() -> Verdict:
        if target is None:
            return not_checked("no running instance to probe (give --url)")
        return await asyncio.to_thread(probe, target, settings)

    return run


def _framing(target: Target | None, name: str) -> Callable[[], Awaitable[Verdict]]:
    async def run() -> Verdict:
        if target is None:
            return not_checked("no running instance to probe (give --url)")
        return await asyncio.to_thread(framing.smuggling_refused, target, name)

    return run


def checks(
    settings: Settings, database: Database, clock: Clock, target: Target | None
) -> list[Check]:
    """Every check, in the order the summary lists them."""

    def live(id_: str, claim: str, method: str, probe: http_probes.Probe) -> Check:
        return Check(id_, claim, method, _live(target, settings, probe))

    async def configuration() -> Verdict:
        return configuration_has_no_error(settings)

    async def dependencies() -> Verdict:
        return await asyncio.to_thread(dependencies_have_no_known_vulnerability)

    found = [
        Check(
            "config.findings",
            "The configuration has no `keel check` error",
            "`keel check` findings for the configured settings",
            configuration,
        ),
        Check(
            "audit.chain",
            "The audit trail's hash chain verifies",
            "`keel audit verify` (keel.audit.verify) over the configured database",
            lambda: db_checks.audit_chain_verifies(settings, database),
        ),
        Check(
            "db.migrations",
            "The database schema is at every migration head",
            "the version table against the revisions this code ships",
            lambda: db_checks.schema_is_migrated(settings, database),
        ),
        Check(
            "keys.age",
            f"The access-token signing key is younger than {SIGNING_KEY_MAX_AGE.days} days",
            "the key file's current kid and its `key_promoted` audit event",
            lambda: signing_key_is_young(settings, database, clock),
        ),
        Check(
            "keys.rotation",
            f"No staged signing key waits more than {STAGED_KEY_MAX_WAIT.days} day for promotion",
            "the key file's staged and retired keys",
            lambda: rotation_is_not_stalled(settings, clock),
        ),
        Check(
            "deps.vulnerabilities",
            "No installed package has a known vulnerability",
            "pip-audit over keel's environment",
            dependencies,
        ),
        live(
            "headers.2xx",
            "A 2xx response carries keel's security headers",
            "GET /livez",
            http_probes.headers_on_2xx,
        ),
        live(
            "headers.4xx",
            "A 4xx response carries keel's security headers",
            "GET of a path that does not exist",
            http_probes.headers_on_4xx,
        ),
        live(
            "headers.5xx",
            "An error answered outside the routes (5xx, else the server's 431) carries them too",
            "GET /readyz; if it is not 5xx, a head with one field too many",
            http_probes.headers_on_5xx,
        ),
        live(
            "headers.fingerprint",
            "No response names the server (no Server or X-Powered-By header)",
            "GET /livez and a 404",
            http_probes.no_fingerprint_headers,
        ),
        live(
            "cors.foreign_origin",
            "A foreign origin gets no CORS grant",
            "a preflight and a GET with Origin https://keel-security-report.invalid",
            http_probes.cors_refuses_foreign_origin,
        ),
        live(
            "http.trace",
            "TRACE is refused",
            "TRACE / with a canary header",
            http_probes.trace_refused,
        ),
        Check(
            "http.body_limit",
            "A body over KEEL_MAX_BODY_BYTES is refused with 413",
            "POST / with a body one byte over the limit",
            _live(target, settings, framing.oversized_body_refused),
        ),
        *(
            Check(
                f"framing.{name}",
                f"A request with {what} is refused and nothing is smuggled behind it",
                "raw bytes on a socket, then a pipelined GET /livez",
                _framing(target, name),
            )
            for name, (what, _) in framing.FRAMINGS.items()
        ),
        live(
            "errors.problem_json",
            "Errors are problem+json without internals",
            "a 404, a TRACE and malformed JSON on /auth/login",
            http_probes.problems_without_internals,
        ),
        live(
            "docs.hidden",
            "/docs, /redoc and /openapi.json are not served",
            "GET of each",
            http_probes.docs_not_exposed,
        ),
    ]
    return found


async def _decide(check: Check) -> Verdict:
    try:
        return await check.run()
    except Unreachable as exc:
        return not_checked(f"the instance did not answer: {exc}")
    except KeelError as exc:  # the database is unavailable, a setting cannot work
        return not_checked(f"{exc.message} [{exc.code}]")
    except (SQLAlchemyError, OSError) as exc:  # the type only: a driver's text can name hosts
        return not_checked(f"the database could not be read ({type(exc).__name__})")
    except Exception as exc:  # noqa: BLE001 - a check that breaks proves nothing either way
        event(_log, logging.ERROR, "security_report_check_failed", check=check.id, error=repr(exc))
        return not_checked(f"the check could not complete ({type(exc).__name__})")


async def run_report(settings: Settings, clock: Clock, url: str | None = None) -> Report:
    """Run every check against ``settings`` (and the instance at ``url``); the report."""
    target = Target.parse(url) if url else None
    started = clock.now()
    database = Database(settings.database)
    claims = []
    try:
        for check in checks(settings, database, clock, target):
            at = clock.now()
            verdict = await _decide(check)
            claims.append(
                Claim(check.id, check.claim, check.method, at, verdict.outcome, verdict.evidence)
            )
    finally:
        await database.dispose()
    return Report(
        tuple(claims),
        started,
        settings.env,
        str(target) if target else None,
    )
