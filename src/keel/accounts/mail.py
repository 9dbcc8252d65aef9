"""Outgoing mail: the ``Message``, the ``Mailer`` protocol and its three backends.

Backends (``KEEL_MAIL_BACKEND``):

- ``console`` (development default): logs ``mail_sent`` with the recipient,
  subject and kind, never the body, because bodies carry single-use links
  (SEC-65). With ``show_body`` (on in development only, see
  :func:`build_mailer`) it also writes the whole message to stderr, outside
  logging, so a developer can click the link; production never prints it.
- ``file``: appends one JSON object per message to a file (mode 0600); tests
  read their links from it.
- ``smtp``: :mod:`smtplib` in a worker thread, STARTTLS (or implicit TLS) with
  certificate verification, optional login.

Delivery is the durable outbox's (:mod:`keel.accounts.outbox`): messages are
written in the transaction of the change that causes them and sent from
there, at least once; ``Message.idempotency_key`` tells a resend apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import smtplib
import ssl
import sys
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Final, Literal, Protocol, TextIO

from keel._clock import Clock, SystemClock
from keel._logging import event
from keel.errors import ConfigurationError
from keel.settings import MailSettings

__all__ = [
    "ConsoleMailer",
    "FileMailer",
    "Mailer",
    "Message",
    "SmtpMailer",
    "build_mailer",
]

_log = logging.getLogger("keel.accounts.mail")

SmtpSecurity = Literal["starttls", "tls", "none"]

_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True)
class Message:
    """One plain-text message. ``body`` is kept out of ``repr``: it may carry a link token.

    ``idempotency_key`` is set by the outbox (the row's id) and is the same on
    every attempt, so a resend after a crash is recognisably the same message.
    """

    to: str
    subject: str
    body: str = field(repr=False)
    kind: str
    user_id: str | None = None
    idempotency_key: str | None = None


class Mailer(Protocol):
    """Sends one message or raises."""

    async def send(self, message: Message) -> None: ...


class ConsoleMailer:
    """Logs that a message was sent; prints the body to ``stream`` only when ``show_body``."""

    def __init__(
        self, *, sender: str, show_body: bool = False, stream: TextIO | None = None
    ) -> None:
        self._sender = sender
        self._show_body = show_body
        self._stream = stream

    async def send(self, message: Message) -> None:
        event(
            _log,
            logging.INFO,
            "mail_sent",
            backend="console",
            to=message.to,
            subject=message.subject,
            kind=message.kind,
        )
        if self._show_body:
            stream = self._stream or sys.stderr
            stream.write(
                f"--- mail (development only) ---\nFrom: {self._sender}\nTo: {message.to}\n"
                f"Subject: {message.subject}\n\n{message.body}\n--- end of mail ---\n"
            )
            stream.flush()


class FileMailer:
    """Appends each message as one JSON line to ``path`` (created with mode 0600)."""

    def __init__(self, path: str | os.PathLike[str], *, sender: str, clock: Clock | None = None):
        self._path = os.fspath(path)
        self._sender = sender
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        return self._path

    async def send(self, message: Message) -> None:
        record = {
            "from": self._sender,
            "to": message.to,
            "subject": message.subject,
            "body": message.body,
            "kind": message.kind,
            "user_id": message.user_id,
            "idempotency_key": message.idempotency_key,
            "sent_at": self._clock.now().isoformat(),
        }
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        await asyncio.to_thread(self._append, line.encode("utf-8"))
        event(_log, logging.INFO, "mail_sent", backend="file", to=message.to, kind=message.kind)

    def _append(self, data: bytes) -> None:
        with self._lock:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every message written so far (for tests and tools)."""
        try:
            with open(self._path, encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        except FileNotFoundError:
            return []


class SmtpMailer:
    """Sends through an SMTP relay from a worker thread (``smtplib`` blocks)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        security: SmtpSecurity = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        if security == "none" and host not in _LOOPBACK_HOSTS:
            raise ConfigurationError("SMTP without TLS is only allowed to a loopback relay")
        if password is not None and security == "none":
            raise ConfigurationError("SMTP credentials are never sent without TLS")
        self._host = host
        self._port = port
        self._sender = sender
        self._security = security
        self._username = username
        self._password = password
        self._timeout = timeout
        self._clock = clock or SystemClock()

    def __repr__(self) -> str:
        return f"SmtpMailer(host={self._host!r}, port={self._port}, security={self._security!r})"

    def build(self, message: Message) -> EmailMessage:
        """The RFC 5322 message for ``message``."""
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(self._clock.now())
        domain = self._sender.rpartition("@")[2].strip("> ") or None
        key = message.idempotency_key
        # The same Message-ID on every attempt: a resend after a crash is a duplicate, not news.
        mail["Message-ID"] = (
            f"<{key}@{domain or 'localhost'}>" if key else make_msgid(domain=domain)
        )
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
        mail.set_content(message.body)
        return mail

    async def send(self, message: Message) -> None:
        await asyncio.to_thread(self._send, self.build(message))
        event(_log, logging.INFO, "mail_sent", backend="smtp", to=message.to, kind=message.kind)

    def _send(self, mail: EmailMessage) -> None:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if self._security == "tls":
            client = smtplib.SMTP_SSL(
                self._host, self._port, timeout=self._timeout, context=context
            )
        else:
            client = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        with client:
            if self._security == "starttls":
                client.starttls(context=context)
            if self._username is not None and self._password is not None:
                client.login(self._username, self._password)
            client.send_message(mail)


def build_mailer(
    settings: MailSettings, *, service_name: str, development: bool, clock: Clock | None = None
) -> Mailer:
    """The configured backend (the settings' ``mail`` section).

    The console backend shows bodies only in development. Without
    ``KEEL_MAIL_FROM`` mail comes from ``<service_name> <no-reply@localhost>``.
    """
    sender = settings.sender or f"{service_name} <no-reply@localhost>"
    if settings.backend == "console":
        return ConsoleMailer(sender=sender, show_body=development)
    if settings.backend == "file":
        if not settings.file:
            raise ConfigurationError("KEEL_MAIL_BACKEND=file needs KEEL_MAIL_FILE")
        return FileMailer(settings.file, sender=sender, clock=clock)
    if settings.backend == "smtp":
        password = settings.smtp_password
        return SmtpMailer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=sender,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=password.get_secret_value() if password else None,
            timeout=settings.smtp_timeout,
            clock=clock,
        )
    raise ConfigurationError("KEEL_MAIL_BACKEND must be console, file or smtp")
