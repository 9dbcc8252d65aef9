"""``AuditEvent``: a closed vocabulary, aware UTC, bounded and scrubbed fields, no floats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from keel.audit import Action, ActorType, AuditEvent, Result
from keel.audit.event import MAX_DETAILS_BYTES, MAX_FIELD

NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_values_are_normalised() -> None:
    event = AuditEvent(
        action="authn_login_success",  # type: ignore[arg-type]
        result="success",  # type: ignore[arg-type]
        occurred_at=datetime(2026, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2))),
        actor_type="user",  # type: ignore[arg-type]
        actor_id=42,  # type: ignore[arg-type]
        source_ip="2001:0db8:0000::0001",
    )
    assert event.action is Action.AUTHN_LOGIN_SUCCESS
    assert event.result is Result.SUCCESS
    assert event.actor_type is ActorType.USER
    assert event.occurred_at == NOW
    assert event.occurred_at.tzinfo is UTC  # SEC-67
    assert event.actor_id == "42"
    assert event.source_ip == "2001:db8::1"


def test_sec_64_actions_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(ValueError, match="not a valid Action"):
        AuditEvent(action="user_hacked", result=Result.SUCCESS, occurred_at=NOW)  # type: ignore[arg-type]


def test_sec_67_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        AuditEvent(Action.USER_CREATED, Result.SUCCESS, datetime(2026, 1, 1))  # noqa: DTZ001


def test_invalid_ip_addresses_are_refused() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        AuditEvent(Action.USER_CREATED, Result.SUCCESS, NOW, source_ip="10.0.0.256")


def test_floats_in_details_are_refused() -> None:
    with pytest.raises(ValueError, match="float"):
        AuditEvent(Action.USER_CREATED, Result.SUCCESS, NOW, details={"score": {"x": [0.5]}})


def test_details_are_bounded() -> None:
    with pytest.raises(ValueError, match=str(MAX_DETAILS_BYTES)):
        AuditEvent(
            Action.USER_CREATED,
            Result.SUCCESS,
            NOW,
            details={f"k{i}": "word " * 20 for i in range(100)},
        )


def test_sec_65_details_and_user_agent_are_scrubbed() -> None:
    event = AuditEvent(
        Action.AUTHN_PASSWORD_CHANGE,
        Result.SUCCESS,
        NOW,
        user_agent="tool/1 Authorization: Bearer abcdefghijklmnop0123456789",
        details={"old_password": "hunter2", "new_password": "hunter3", "user_id": "u1"},
    )
    assert event.details == {
        "old_password": "[redacted]",
        "new_password": "[redacted]",
        "user_id": "u1",
    }
    assert event.user_agent == "[redacted]"


def test_sec_66_control_characters_cannot_forge_lines() -> None:
    event = AuditEvent(
        Action.AUTHN_LOGIN_FAIL,
        Result.FAILURE,
        NOW,
        target_id="bob\r\n2026-01-01 INFO admin login ok",
        user_agent="agent\nX-Forged: 1\x00",
        request_id="r\x1b[31m",
    )
    for value in (event.target_id, event.user_agent, event.request_id):
        assert value is not None
        assert value.isprintable()
    assert event.target_id == "bob??2026-01-01 INFO admin login ok"


def test_free_text_fields_are_bounded() -> None:
    event = AuditEvent(
        Action.USER_UPDATED, Result.SUCCESS, NOW, target_id="x" * 1000, user_agent="y " * 1000
    )
    assert event.target_id is not None
    assert event.user_agent is not None
    assert len(event.target_id) == MAX_FIELD
    assert len(event.user_agent) <= MAX_FIELD


def test_unpaired_surrogates_in_the_user_agent_are_replaced() -> None:
    event = AuditEvent(Action.USER_UPDATED, Result.SUCCESS, NOW, user_agent="ok\ud800")
    assert event.user_agent == "ok?"


def test_events_are_immutable() -> None:
    event = AuditEvent(Action.USER_UPDATED, Result.SUCCESS, NOW)
    with pytest.raises(AttributeError):
        event.actor_id = "someone"  # type: ignore[misc]
