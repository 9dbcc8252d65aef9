"""At most ``KEEL_MAIL_RECIPIENT_LIMIT`` mails to one address per hour.

A flood of registrations, password-reset requests or e-mail changes naming
one address is answered as always (the same 202 or 200: nothing says whether
mail went out), but beyond the limit nothing more is sent to that address.
``password_changed`` notices are never held back (only the account's owner
can cause one). ``password_reset`` mail is counted by
``RecoveryService.forgot_password`` before it replaces the owner's link, so a
flood never cancels the last link the owner received; every other kind is
counted here, at delivery (a retried delivery counts again).
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

from keel._logging import event
from keel.accounts.email import InvalidEmail, normalise_email
from keel.accounts.mail import Mailer, Message

__all__ = ["COUNTED_BY_SENDER", "CappedMailer", "MailBudget", "recipient_key"]

_log = logging.getLogger("keel.mail")

#: Never limited: the owner's own change of password.
_UNLIMITED: Final = frozenset({"password_changed"})
#: Counted by whoever posts them, before any side effect (a reset link replaces older ones).
COUNTED_BY_SENDER: Final = frozenset({"password_reset"})


class MailBudget(Protocol):
    """Per-recipient mail budgets, shared by every worker and instance."""

    async def take_mail(self, recipient_key: str) -> bool:
        """Count one mail to ``recipient_key``; ``False`` (nothing counted) beyond the limit."""
        ...


def recipient_key(address: str) -> str:
    """The key an address is limited by: its normalised form (one mailbox, one budget)."""
    try:
        return normalise_email(address).key
    except InvalidEmail:
        return address.strip().lower()


class CappedMailer:
    """A ``Mailer`` that drops a message whose recipient has used up its budget."""

    def __init__(self, inner: Mailer, budget: MailBudget) -> None:
        self._inner = inner
        self._budget = budget

    def __repr__(self) -> str:
        return f"CappedMailer({self._inner!r})"

    async def send(self, message: Message) -> None:
        counted = message.kind in _UNLIMITED or message.kind in COUNTED_BY_SENDER
        if not counted and not await self._budget.take_mail(recipient_key(message.to)):
            event(
                _log,
                logging.WARNING,
                "mail_recipient_limited",
                kind=message.kind,
                user_id=message.user_id,
            )
            return
        await self._inner.send(message)
