"""Request dependencies: the app context and one unit of work per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from keel.api.state import AppContext, get_context
from keel.db import UnitOfWork

__all__ = ["Context", "UoW", "unit_of_work"]


async def unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    """One unit of work per request: committed when the handler returns, rolled back on error."""
    async with get_context(request).database.unit_of_work() as uow:
        yield uow


Context = Annotated[AppContext, Depends(get_context)]
# scope="function": the transaction commits when the handler returns, before the
# response is sent, so a 2xx always means the change is durable.
UoW = Annotated[UnitOfWork, Depends(unit_of_work, scope="function")]
