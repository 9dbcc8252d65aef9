"""The names keel.accounts exports, pinned: the contract keel.auth and keel.api build on."""

from __future__ import annotations

import inspect

import keel.accounts
from keel.accounts import AccountService, UserState, load_user_state
from keel.api import accounts as api_accounts


def test_contract_with_keel_auth() -> None:
    assert [field for field in UserState.__dataclass_fields__] == [
        "user_id",
        "active",
        "tokens_valid_after",
        "scopes",
    ]
    assert UserState.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert list(inspect.signature(load_user_state).parameters) == ["source", "user_id"]
    assert "on_user_changed" in inspect.signature(AccountService).parameters


def test_exports() -> None:
    for name in (
        "AccountService",
        "UserState",
        "load_user_state",
        "InvalidCredentials",
        "Mailer",
        "Outbox",
        "UserView",
    ):
        assert name in keel.accounts.__all__
    assert api_accounts.__all__ == [
        "REGISTER_ACCEPTED",
        "TOKEN_FORM_MAX",
        "build_accounts_router",
        "install_read_me",
    ]
