"""A claim of the security summary, the check that decided it, when, and what it found.

Only a check decides a claim: :class:`Outcome` is ``pass`` or ``fail`` when the
check ran, and ``not checked`` (with the reason) when it could not run. A
check that cannot run is never reported as passing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = ["Check", "Claim", "Outcome", "Verdict", "failed", "not_checked", "passed"]


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"
    NOT_CHECKED = "not checked"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one run of a check found: the outcome and the evidence (or why it could not run)."""

    outcome: Outcome
    evidence: str


def passed(evidence: str) -> Verdict:
    return Verdict(Outcome.PASS, evidence)


def failed(evidence: str) -> Verdict:
    return Verdict(Outcome.FAIL, evidence)


def not_checked(reason: str) -> Verdict:
    return Verdict(Outcome.NOT_CHECKED, reason)


@dataclass(frozen=True, slots=True)
class Check:
    """A claim and the check that proves or refutes it.

    ``id`` is stable (``headers.2xx``); ``claim`` is the sentence the summary
    states; ``method`` says how it is checked; ``run`` returns the verdict.
    """

    id: str
    claim: str
    method: str
    run: Callable[[], Awaitable[Verdict]]


@dataclass(frozen=True, slots=True)
class Claim:
    """One line of the summary: a check's claim, method, UTC time and verdict."""

    id: str
    claim: str
    method: str
    checked_at: datetime
    outcome: Outcome
    evidence: str

    def __post_init__(self) -> None:
        if self.checked_at.tzinfo is None:
            raise ValueError("checked_at must be an aware UTC datetime")

    @property
    def timestamp(self) -> str:
        """``checked_at`` as ISO 8601 UTC to the second (``2026-12-07T21:00:00Z``)."""
        return self.checked_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "claim": self.claim,
            "check": self.method,
            "checked_at": self.timestamp,
            "result": self.outcome.value,
            "evidence": self.evidence,
        }
