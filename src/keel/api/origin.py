"""Where a request came from, as the audit trail records it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from keel.api.problems import get_request_id

__all__ = ["RequestOrigin", "origin_of"]

_USER_AGENT_MAX = 256


@dataclass(frozen=True, slots=True)
class RequestOrigin:
    """Client address (after the trusted-proxy middleware), user agent and request id."""

    source_ip: str | None
    user_agent: str | None
    request_id: str | None


def origin_of(connection: HTTPConnection) -> RequestOrigin:
    client = connection.client
    agent = connection.headers.get("user-agent")
    return RequestOrigin(
        source_ip=_ip(client.host) if client else None,
        user_agent=agent[:_USER_AGENT_MAX] if agent else None,
        request_id=get_request_id(connection),
    )


def _ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None  # a test transport's "testclient", say: not an address
