"""keel.accounts.mail: backends that never log a body, and an outbox that never loses silently."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from keel.accounts.mail import (
    ConsoleMailer,
    FileMailer,
    MailSettings,
    Message,
    Outbox,
    SmtpMailer,
    build_mailer,
    mail_settings_from,
)
from keel.errors import ConfigurationError
from keel.settings import Settings

SECRET_LINK = "https://app.example/verify-email#token=SECRET-TOKEN-123"
MESSAGE = Message(
    to="user@example.com",
    subject="Confirm",
    body=f"open {SECRET_LINK}",
    kind="verify_email",
    user_id="u-1",
)


def spawn(name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro, name=name)


class Flaky:
    """Fails ``failures`` times, then delivers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.delivered: list[Message] = []

    async def send(self, message: Message) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("relay down")
        self.delivered.append(message)


class Stuck:
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def send(self, message: Message) -> None:
        self.started.set()
        await asyncio.sleep(3600)


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


def test_settings_and_backends(tmp_path: Path) -> None:
    defaults = mail_settings_from(Settings(service_name="acme"))
    assert defaults.backend == "console"
    assert defaults.sender == "acme <no-reply@localhost>"
    assert "hunter2-secret" not in repr(MailSettings(smtp_password="hunter2-secret"))
    console = build_mailer(defaults, development=False)
    assert isinstance(console, ConsoleMailer)
    with pytest.raises(ConfigurationError):
        build_mailer(MailSettings(backend="file"), development=True)
    file = build_mailer(
        MailSettings(backend="file", file_path=str(tmp_path / "m")), development=True
    )
    assert isinstance(file, FileMailer)
    smtp = build_mailer(
        MailSettings(backend="smtp", smtp_host="smtp.example.com"), development=True
    )
    assert isinstance(smtp, SmtpMailer)


async def test_outbox_retries_then_delivers() -> None:
    mailer = Flaky(failures=2)
    outbox = Outbox(mailer, spawn=spawn, audit=None, backoff=(0.001, 0.001))
    outbox.post(MESSAGE)
    assert outbox.pending == 1
    await outbox.drain()
    assert mailer.calls == 3
    assert mailer.delivered == [MESSAGE]
    assert (outbox.sent, outbox.failed) == (1, 0)


async def test_outbox_gives_up_loudly(caplog: pytest.LogCaptureFixture) -> None:
    mailer = Flaky(failures=10)
    outbox = Outbox(mailer, spawn=spawn, audit=None, backoff=(0.001, 0.001))
    with caplog.at_level(logging.WARNING, logger="keel.accounts.mail"):
        outbox.post(MESSAGE)
        await outbox.drain()
    assert mailer.calls == 3
    assert (outbox.sent, outbox.failed) == (0, 1)
    [failed] = [r for r in caplog.records if r.getMessage() == "mail_send_failed"]
    assert failed.levelno == logging.ERROR
    assert failed.__dict__["fields"]["attempts"] == 3
    assert failed.__dict__["fields"]["error"] == "ConnectionRefusedError"
    assert "SECRET" not in caplog.text


async def test_outbox_backlog_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    mailer = Stuck()
    outbox = Outbox(mailer, spawn=spawn, audit=None, concurrency=1, max_pending=2)
    with caplog.at_level(logging.ERROR, logger="keel.accounts.mail"):
        outbox.post(MESSAGE, MESSAGE, MESSAGE)
        await asyncio.sleep(0.01)
    assert outbox.failed == 1
    assert any(
        r.getMessage() == "mail_send_failed" and r.__dict__["fields"]["error"] == "backlog_full"
        for r in caplog.records
    )
    for task in [t for t in asyncio.all_tasks() if t.get_name() == "keel.mail"]:
        task.cancel()
    await outbox.drain()


async def test_outbox_reports_cancelled_and_refused_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailer = Stuck()
    tasks: list[asyncio.Task[Any]] = []

    def tracking(name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        tasks.append(spawn(name, coro))
        return tasks[-1]

    outbox = Outbox(mailer, spawn=tracking, audit=None)
    with caplog.at_level(logging.ERROR, logger="keel.accounts.mail"):
        outbox.post(MESSAGE)
        await mailer.started.wait()
        tasks[0].cancel()  # what shutdown does
        await outbox.drain()

        def refusing(name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
            coro.close()
            raise RuntimeError("the app is shutting down; no new tasks")

        Outbox(mailer, spawn=refusing, audit=None).post(MESSAGE)
    reasons = [
        r.__dict__["fields"]["reason"] for r in caplog.records if r.getMessage() == "mail_dropped"
    ]
    assert reasons == ["cancelled", "shutting_down"]
