"""``MailStaging``: account mail written to the durable outbox in the change's own transaction.

A message staged in a unit of work is sent if (and only if) that unit of work
commits (:mod:`keel.accounts.outbox`). The per-recipient budget
(:mod:`keel.accounts.mailcap`) is asked first where a request could otherwise
make keel mail one address without end (a forgotten-password request).
"""

from __future__ import annotations

from collections.abc import Sequence

from keel.accounts.mail import Message
from keel.accounts.mailcap import MailBudget
from keel.accounts.models import User
from keel.accounts.outbox import Outbox
from keel.db import UnitOfWork

__all__ = ["MailStaging"]


class MailStaging:
    """Stages account mail in the outbox; ``outbox`` and ``budget`` are optional."""

    def __init__(self, outbox: Outbox | None, budget: MailBudget | None = None) -> None:
        self._outbox = outbox
        self._budget = budget

    @property
    def outbox(self) -> Outbox | None:
        return self._outbox

    def stage(self, uow: UnitOfWork, messages: Sequence[Message]) -> None:
        """Write ``messages`` to the outbox in ``uow``: sent if (and only if) it commits."""
        if not messages:
            return
        if self._outbox is None:
            raise RuntimeError("AccountService was built without an outbox")
        self._outbox.stage(uow, messages)

    async def take(self, user: User) -> bool:
        """Count one mail to ``user``'s address; ``False`` beyond its per-recipient limit."""
        return self._budget is None or await self._budget.take_mail(user.email_key)
