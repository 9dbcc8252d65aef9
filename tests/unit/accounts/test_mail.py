"""keel.accounts.mail: backends that never log a body; one Message-ID per idempotency key."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from keel.accounts.mail import (
    ConsoleMailer,
    FileMailer,
    Message,
    SmtpMailer,
    build_mailer,
)
from keel.errors import ConfigurationError
from keel.settings import MailSettings, Settings

SECRET_LINK = "https://app.example/verify-email#token=SECRET-TOKEN-123"
MESSAGE = Message(
    to="user@example.com",
    subject="Confirm",
    body=f"open {SECRET_LINK}",
    kind="verify_email",
    user_id="u-1",
)


def test_message_repr_hides_the_body() -> None:
    assert "SECRET" not in repr(MESSAGE)


async def test_console_logs_metadata_never_the_body(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.DEBUG):
        await ConsoleMailer(sender="keel <k@example.com>", stream=stream).send(MESSAGE)
    [record] = [r for r in caplog.records if r.getMessage() == "mail_sent"]
    fields = record.__dict__["fields"]
    assert fields["to"] == "user@example.com"
    assert fields["kind"] == "verify_email"
    assert "SECRET" not in repr(record.__dict__)
    assert stream.getvalue() == ""


async def test_console_shows_the_body_only_when_asked() -> None:
    stream = io.StringIO()
    await ConsoleMailer(sender="keel <k@example.com>", show_body=True, stream=stream).send(MESSAGE)
    assert SECRET_LINK in stream.getvalue()


async def test_file_mailer_appends_json_lines_privately(tmp_path: Path) -> None:
    path = tmp_path / "mail.jsonl"
    mailer = FileMailer(path, sender="keel <k@example.com>")
    await mailer.send(MESSAGE)
    await mailer.send(MESSAGE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert (record["to"], record["body"], record["kind"]) == (
        MESSAGE.to,
        MESSAGE.body,
        "verify_email",
    )
    assert mailer.read() == [record, json.loads(lines[1])]


def test_smtp_refuses_plaintext_except_to_loopback() -> None:
    with pytest.raises(ConfigurationError):
        SmtpMailer(host="smtp.example.com", port=25, sender="k@example.com", security="none")
    with pytest.raises(ConfigurationError):
        SmtpMailer(
            host="localhost", port=25, sender="k@example.com", security="none", password="pw"
        )
    SmtpMailer(host="localhost", port=1025, sender="k@example.com", security="none")


def test_smtp_builds_a_plain_message_and_hides_credentials() -> None:
    mailer = SmtpMailer(
        host="smtp.example.com",
        port=587,
        sender="keel <no-reply@keel.example>",
        username="relay",
        password="relay-password-xyz",
    )
    assert "relay-password-xyz" not in repr(mailer)
    mail = mailer.build(MESSAGE)
    assert mail["To"] == "user@example.com"
    assert mail["From"] == "keel <no-reply@keel.example>"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Message-ID"].endswith("@keel.example>")
    assert SECRET_LINK in mail.get_content()
    # A resend of one outbox message carries the same Message-ID (at-least-once, recognisable).
    keyed = dataclasses.replace(MESSAGE, idempotency_key="0f1e2d3c")
    assert mailer.build(keyed)["Message-ID"] == "<0f1e2d3c@keel.example>"
    assert mailer.build(keyed)["Message-ID"] == mailer.build(keyed)["Message-ID"]


def test_settings_and_backends(tmp_path: Path) -> None:
    settings = Settings(service_name="acme", smtp_password="hunter2-secret")
    defaults = settings.mail
    assert defaults.backend == "console"
    assert "hunter2-secret" not in repr(defaults)
    console = build_mailer(defaults, service_name="acme", development=False)
    assert isinstance(console, ConsoleMailer)
    with pytest.raises(ConfigurationError):
        build_mailer(MailSettings(backend="file"), service_name="acme", development=True)
    file = build_mailer(
        MailSettings(backend="file", file=str(tmp_path / "m")),
        service_name="acme",
        development=True,
    )
    assert isinstance(file, FileMailer)
    asyncio.run(file.send(MESSAGE))
    # Without KEEL_MAIL_FROM, mail comes from the service's name.
    assert [record["from"] for record in file.read()] == ["acme <no-reply@localhost>"]
    smtp = build_mailer(
        MailSettings(backend="smtp", smtp_host="smtp.example.com"),
        service_name="acme",
        development=True,
    )
    assert isinstance(smtp, SmtpMailer)
