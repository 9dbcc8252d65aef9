"""``AuditEvent``: one security-relevant fact, as it will be chained and stored."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from keel.audit.app_actions import AppAction, is_app_action_name
from keel.audit.canonical import canonical_json
from keel.audit.scrub import scrub, scrub_text
from keel.audit.vocabulary import Action, ActorType, Result

__all__ = ["AuditEvent"]

MAX_DETAILS_BYTES = 4096
MAX_FIELD = 256


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened, who did it, to what, from where, and when (aware UTC).

    Construction normalises and scrubs: the action must be in keel's closed
    vocabulary or an application's declared actions (``keel.audit.app_actions``),
    the timestamp aware (converted to UTC), details a small JSON object with no
    floats, and every free-text field bounded and scrubbed.
    """

    action: Action | AppAction
    result: Result
    occurred_at: datetime
    actor_type: ActorType = ActorType.ANONYMOUS
    actor_id: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.action, AppAction):
            if not is_app_action_name(self.action):
                raise ValueError(f"{self.action!r} is not an application action (namespace.name)")
        else:
            set_(self, "action", Action(self.action))  # keel's vocabulary: closed to typos
        set_(self, "result", Result(self.result))
        set_(self, "actor_type", ActorType(self.actor_type))
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        set_(self, "occurred_at", self.occurred_at.astimezone(UTC))
        if self.source_ip is not None:
            set_(self, "source_ip", str(ipaddress.ip_address(self.source_ip)))
        for name in ("actor_id", "target_type", "target_id", "request_id"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, _bounded(str(value)))
        if self.user_agent is not None:
            # Scrubbed, then control characters (CR/LF: log forging, SEC-66) and
            # unpaired surrogates (no UTF-8 form) replaced, then bounded.
            set_(self, "user_agent", _bounded(scrub_text(str(self.user_agent))))
        details = scrub(dict(self.details))
        _reject_floats(details)
        set_(self, "details", details)
        if len(canonical_json(details)) > MAX_DETAILS_BYTES:
            raise ValueError(f"audit details exceed {MAX_DETAILS_BYTES} bytes")


def _bounded(value: str) -> str:
    if value.isprintable():  # the common case, without a pass per character
        return value[:MAX_FIELD]
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in value)
    return cleaned[:MAX_FIELD]


def _reject_floats(value: object) -> None:
    if isinstance(value, float):
        raise ValueError("audit details may not hold floats (canonical form has none)")
    if isinstance(value, dict):
        for item in value.values():
            _reject_floats(item)
    elif isinstance(value, list):
        for item in value:
            _reject_floats(item)
