"""SEC-12, measured: the answers that must not tell a taken address from a free one take as long.

Forgot-password for a registered address against an unknown one, registration
of a taken address against a new one, an e-mail change to someone else's
address against a free one, and a wrong password against a legacy bcrypt hash
against an unknown address: each pair interleaved, every answer at least its
floor (``keel.accounts.pacing``), and the medians within 0.9-1.1 of each other,
a tighter band than SEC-11's because the floor leaves only scheduling jitter.
The last test's control shows the band has teeth: with the floor off, a legacy
hash's refusal is measurably slower than an unknown address's.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import bcrypt
import pytest

from keel.accounts import NO_ORIGIN, AccountService, InvalidCredentials
from keel.accounts.repository import AccountRepository
from keel.db import Database

from ._service import ServiceFactory

PASSWORD = "correct horse battery staple 42"
WRONG = "not the right password at all 7"
FLOOR = 0.04
ROUNDS = 20
LOW, HIGH = 0.9, 1.1

Path = Callable[[], Awaitable[None]]


async def _timed(path: Path) -> float:
    began = time.monotonic()
    await path()
    return time.monotonic() - began


async def _samples(paths: dict[str, Path]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for path in paths.values():  # warm every path before timing
        await path()
    order = list(paths)
    for _ in range(ROUNDS):
        random.shuffle(order)
        for name in order:
            samples[name].append(await _timed(paths[name]))
    return samples


def _assert_floored_and_alike(samples: dict[str, list[float]], floor: float) -> None:
    for name, values in samples.items():
        assert min(values) >= floor * 0.99, (name, min(values))
    first, second = (statistics.median(values) for values in samples.values())
    assert LOW <= first / second <= HIGH, {n: statistics.median(v) for n, v in samples.items()}


def _addresses(prefix: str) -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"{prefix}-{next(counter)}@keel.example"


async def test_sec_12_forgot_password_takes_as_long_for_a_registered_address(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(enumeration_floor=FLOOR)
    await service.create_admin("owner@keel.example", PASSWORD)

    async def registered() -> None:
        await service.forgot_password("owner@keel.example", NO_ORIGIN)

    async def unknown() -> None:
        await service.forgot_password("nobody@keel.example", NO_ORIGIN)

    _assert_floored_and_alike(await _samples({"registered": registered, "unknown": unknown}), FLOOR)


async def test_sec_12_registering_a_taken_address_takes_as_long_as_a_new_one(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(enumeration_floor=FLOOR)
    await service.create_admin("taken@keel.example", PASSWORD)
    fresh = _addresses("new")

    async def taken() -> None:
        await service.register("taken@keel.example", PASSWORD, None, NO_ORIGIN)

    async def new() -> None:
        await service.register(fresh(), PASSWORD, None, NO_ORIGIN)

    _assert_floored_and_alike(await _samples({"taken": taken, "new": new}), FLOOR)


async def test_sec_12_an_email_change_to_a_taken_address_takes_as_long_as_to_a_free_one(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(enumeration_floor=FLOOR)
    mover = await service.create_admin("mover@keel.example", PASSWORD)
    await service.create_admin("someone@keel.example", PASSWORD)
    free = _addresses("free")

    async def to_taken() -> None:
        await service.update_profile(
            str(mover.id), NO_ORIGIN, email="someone@keel.example", current_password=PASSWORD
        )

    async def to_free() -> None:
        await service.update_profile(
            str(mover.id), NO_ORIGIN, email=free(), current_password=PASSWORD
        )

    _assert_floored_and_alike(await _samples({"taken": to_taken, "free": to_free}), FLOOR)


async def test_sec_12_a_display_name_edit_is_not_floored(service_factory: ServiceFactory) -> None:
    service = service_factory(enumeration_floor=1.0)
    user = await service.create_admin("named@keel.example", PASSWORD)
    took = await _timed(lambda: _rename(service, str(user.id)))
    assert took < 0.5


async def _rename(service: AccountService, user_id: str) -> None:
    await service.update_profile(user_id, NO_ORIGIN, display_name="Someone Else")


async def _set_hash(database: Database, email: str, password_hash: str) -> None:
    async with database.unit_of_work() as uow:
        user = await AccountRepository(uow).by_email_key(email)
        assert user is not None
        user.password_hash = password_hash


async def test_sec_12_a_wrong_password_on_a_legacy_hash_takes_as_long_as_an_unknown_address(
    service_factory: ServiceFactory, database: Database
) -> None:
    floor = 0.2
    service = service_factory(failed_login_floor=floor)
    await service.create_admin("legacy@keel.example", PASSWORD)
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(8)).decode()
    await _set_hash(database, "legacy@keel.example", legacy)

    def refused(svc: AccountService, email: str) -> Path:
        async def attempt() -> None:
            with pytest.raises(InvalidCredentials):
                await svc.authenticate(email, WRONG, NO_ORIGIN)

        return attempt

    def paths(svc: AccountService) -> dict[str, Path]:
        return {
            "legacy": refused(svc, "legacy@keel.example"),
            "unknown": refused(svc, "nobody@keel.example"),
        }

    _assert_floored_and_alike(await _samples(paths(service)), floor)

    # Control: without the floor, bcrypt's cost shows against the cheap dummy verification.
    control = await _samples(paths(service_factory(failed_login_floor=0.0)))
    legacy_median = statistics.median(control["legacy"])
    assert legacy_median / statistics.median(control["unknown"]) > HIGH, control
    assert legacy_median < floor  # the floor above was set above the legacy hash's cost
