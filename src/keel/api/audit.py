"""``GET /admin/audit``: the audit trail, for admins, read-only, paginated, itself audited.

SEC-69: only the ``admin`` scope reads it; every read is recorded (as
``authz_admin`` with ``operation: audit_read``) in the same transaction that
reads, so a page is never served without its record. Other methods get 405.
Filters the columns cannot hold (``keel.api.params``) are 422, never a 500;
``action`` is one of keel's actions or of the application's declared ones
(``create_app(audit_actions=...)``); anything else is a 422 like every bad filter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from keel.api.contract import AUDIT_ACTION, authenticated
from keel.api.deps import Context, UoW
from keel.api.middleware import no_store
from keel.api.origin import origin_of
from keel.api.params import UtcTime, bigint_query, text_query
from keel.api.principal import Admin
from keel.audit import MAX_PAGE, Action, Result, query_events
from keel.errors import InvalidInput

__all__ = ["build_audit_router"]


def build_audit_router() -> APIRouter:
    """A fresh router with ``GET /admin/audit`` (admins only, never cached)."""
    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(no_store)])
    router.get("/audit", **authenticated(422))(read_audit)
    return router


async def read_audit(
    request: Request,
    admin: Admin,
    context: Context,
    uow: UoW,
    action: Annotated[str | None, text_query(64, limit=AUDIT_ACTION)] = None,
    actor_id: Annotated[str | None, text_query(256)] = None,
    target_type: Annotated[str | None, text_query(64)] = None,
    target_id: Annotated[str | None, text_query(256)] = None,
    result: Result | None = None,
    since: UtcTime | None = None,
    until: UtcTime | None = None,
    cursor: Annotated[int | None, bigint_query()] = None,
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> dict[str, Any]:
    """One page of audit events, oldest first (``order=desc``: newest first).

    Continue with ``cursor`` = the previous page's ``next_cursor``; ``null``
    means there is nothing more.
    """
    if action is not None and action not in context.audit_actions:
        raise InvalidInput(
            "action is not one of keel's audit actions or the application's",
            code="validation_failed",
        )
    filters: dict[str, Any] = {
        "action": action,
        "actor_id": actor_id,
        "target_type": target_type,
        "target_id": target_id,
        "result": result.value if result else None,
        "since": since,
        "until": until,
    }
    page = await query_events(
        uow,
        **filters,
        after_seq=cursor if order == "asc" else None,
        before_seq=cursor if order == "desc" else None,
        descending=order == "desc",
        limit=limit,
    )
    origin = origin_of(request)
    await context.audit.record(
        uow,
        context.audit.event(
            Action.AUTHZ_ADMIN,
            actor_type=admin.actor_type,
            actor_id=admin.subject,
            target_type="audit_trail",
            origin=origin,
            details={
                "operation": "audit_read",
                "returned": len(page),
                "filters": {k: _text(v) for k, v in filters.items() if v is not None},
            },
        ),
    )
    return {
        "items": [record.to_json() for record in page],
        "next_cursor": page[-1].seq if len(page) == limit else None,
    }


def _text(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
