"""Recording a refused password check: the refusal stands whatever happens to its record."""

from __future__ import annotations

import logging

from keel._logging import event
from keel.audit import AuditEvent, AuditTrail

__all__ = ["record_refusal"]

_log = logging.getLogger("keel.accounts")


async def record_refusal(audit: AuditTrail, audit_event: AuditEvent) -> None:
    """Record a refused password check or lock alone; a failure to is logged, never raised.

    The refusal is answered the same either way (SEC-10): the attempt was
    counted before, so losing its record (a commit past the request deadline)
    neither uncounts it nor turns it into a 5xx.
    """
    try:
        await audit.record_alone(audit_event)
    except Exception as exc:  # noqa: BLE001 - the refusal is answered either way
        event(
            _log,
            logging.ERROR,
            "audit_write_failed",
            action=str(audit_event.action),
            error=type(exc).__name__,
        )
