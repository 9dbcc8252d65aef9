"""The login throttle's test settings and probes, shared by the throttle tests."""

from __future__ import annotations

from keel.auth import LoginThrottle
from keel.errors import TooManyRequests
from keel.settings import ThrottleSettings

__all__ = ["ACCOUNT", "OWNER_IP", "SETTINGS", "refusal", "stranger"]

ACCOUNT = "victim@example.com"
OWNER_IP = "198.51.100.7"

SETTINGS = ThrottleSettings(
    enabled=True,
    account_failures=10,
    account_base_delay=30.0,
    account_max_delay=900.0,
    account_failure_window=12 * 3600,
    account_ip_limit=20,
    ip_limit=50,
    global_limit=5_000,
    window=60,
    known_source_ttl=30 * 24 * 3600,
)


def stranger(n: int) -> str:
    return f"203.0.113.{n}"


async def refusal(throttle: LoginThrottle, ip: str | None, account: str = ACCOUNT) -> str | None:
    """The limit that refuses an attempt on ``account`` from ``ip``, or ``None``."""
    try:
        await throttle.check(account, ip)
    except TooManyRequests as exc:
        return exc.limit
    return None
