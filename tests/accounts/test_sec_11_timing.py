"""SEC-11, measured: a failed login costs the same whether the account exists, is disabled or not.

The deterministic test (``tests/api/test_accounts_login.py``) counts one
verification per attempt; this one times them. Real argon2id at keel's
default parameters (the same ``PasswordHasher`` code path production runs):
30 interleaved attempts for each of an unknown address, an existing account
with a wrong password and a disabled account, then the medians must agree
within 0.8-1.25 (SEC-11's band). The control proves the test has
teeth: the same measurement with the dummy verification switched off puts
the unknown and disabled medians far outside that band.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import AsyncIterator

import pytest

from keel.accounts import NO_ORIGIN, AccountService, InvalidCredentials
from keel.security.hashing import PasswordHasher
from keel.settings import Settings

from ._service import ServiceFactory

PASSWORD = "correct horse battery staple 42"
WRONG = "not the right password at all 7"
ROUNDS = 30
LOW, HIGH = 0.8, 1.25


class SwitchableHasher(PasswordHasher):
    """keel's hasher, unchanged unless ``skip_dummy`` is set (the control only)."""

    skip_dummy = False

    async def dummy_verify(self, password: str) -> None:
        if self.skip_dummy:
            return  # the bug SEC-11 exists to prevent: the quick exit
        await super().dummy_verify(password)


@pytest.fixture
async def hasher(settings: Settings) -> AsyncIterator[PasswordHasher]:
    # Overrides the cheap hasher of conftest.py: keel's real parameters here.
    owned = SwitchableHasher(settings.passwords)
    try:
        yield owned
    finally:
        owned.close()


async def _failed_login_seconds(service: AccountService, email: str) -> float:
    began = time.perf_counter()
    with pytest.raises(InvalidCredentials):
        await service.authenticate(email, WRONG, NO_ORIGIN)
    return time.perf_counter() - began


async def _medians(service: AccountService, emails: dict[str, str]) -> dict[str, float]:
    samples: dict[str, list[float]] = {path: [] for path in emails}
    order = list(emails)
    for _ in range(ROUNDS):
        random.shuffle(order)  # interleaved: drift on a shared machine hits every path alike
        for path in order:
            samples[path].append(await _failed_login_seconds(service, emails[path]))
    return {path: statistics.median(values) for path, values in samples.items()}


async def test_sec_11_failed_logins_take_the_same_time_on_every_path(
    service_factory: ServiceFactory, hasher: PasswordHasher
) -> None:
    assert isinstance(hasher, SwitchableHasher)
    service = service_factory()
    admin = await service.create_admin("admin@keel.example", PASSWORD)
    await service.create_admin("existing@keel.example", PASSWORD)
    disabled = await service.create_admin("disabled@keel.example", PASSWORD)
    await service.set_active(admin.id, disabled.id, False, NO_ORIGIN)
    emails = {
        "existing_wrong_password": "existing@keel.example",
        "unknown": "nobody@keel.example",
        "disabled": "disabled@keel.example",
    }
    for email in emails.values():  # warm every path (connections, caches) before timing
        await _failed_login_seconds(service, email)

    medians = await _medians(service, emails)
    existing = medians["existing_wrong_password"]
    for path in ("unknown", "disabled"):
        assert LOW <= existing / medians[path] <= HIGH, (path, medians)

    # Control: without the dummy verification the other paths skip argon2 and the
    # same comparison fails by a wide margin, so the check above is not vacuous.
    hasher.skip_dummy = True
    control = await _medians(service, emails)
    for path in ("unknown", "disabled"):
        assert control["existing_wrong_password"] / control[path] > 2 * HIGH, (path, control)
