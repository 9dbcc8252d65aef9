"""keel.accounts.views: the ready ``GET /users/me`` body holds the declared fields and no more."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from keel.accounts.views import UserView, profile_json
from keel.api.account_models import UserResponse

VIEW = UserView(
    id="3f1c2a9e-0000-4000-8000-000000000001",
    email="vïewer@keel.example",
    email_verified=True,
    display_name='Quote " and </script>',
    roles=("admin", "user"),
    is_active=True,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    updated_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
)


def test_profile_json_is_what_the_route_declares() -> None:
    body = profile_json(VIEW)
    assert json.loads(body) == UserResponse.of(VIEW).model_dump(mode="json")
    assert UserResponse.model_validate_json(body) == UserResponse.of(VIEW)


def test_profile_json_holds_no_undeclared_field() -> None:
    assert set(json.loads(profile_json(VIEW))) == set(UserResponse.model_fields)
    assert b"is_active" not in profile_json(VIEW)


def test_profile_json_is_compact_utf8() -> None:
    body = profile_json(VIEW)
    assert "vïewer".encode() in body
    assert b": " not in body
    assert body.decode("utf-8")
