"""The type of the ``service_factory`` fixture: builds an ``AccountService`` with overrides."""

from __future__ import annotations

from collections.abc import Callable

from keel.accounts import (
    AccountService,
)

ServiceFactory = Callable[..., AccountService]
