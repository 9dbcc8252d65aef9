"""Outgoing mail: the ``Mailer`` protocol, three backends, and the ``Outbox`` that never blocks.

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

Delivery (:class:`Outbox`): services hand messages over *after* their
transaction commits, and the request returns at once; each message is sent
by a background task started through the app supervisor's ``spawn`` (so
shutdown cancels and awaits it). A failed send is retried (``attempts``,
with backoff); the last failure is logged and audited as ``mail_send_fail``.
A message refused because the backlog is full is logged and audited the same
way; one cancelled by shutdown (or refused while stopping) is logged as
``mail_dropped`` (nothing can be awaited then). Nothing is dropped silently.

Known gap: the outbox lives in memory, so a crash (or a shutdown that cancels
a pending retry) between the commit and the send loses the message, with a
log line but no retry later. The next step is a durable outbox table written
in the business transaction; it must not store link tokens in clear.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import smtplib
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Final, Literal, Protocol, TextIO

from keel._clock import Clock, SystemClock
from keel._logging import event
from keel.audit import Action, ActorType, AuditTrail, Result
from keel.errors import ConfigurationError
from keel.settings import Settings

__all__ = [
    "ConsoleMailer",
    "FileMailer",
    "MailBackend",
    "MailSettings",
    "Mailer",
    "Message",
    "Outbox",
    "SmtpMailer",
    "Spawn",
    "build_mailer",
    "mail_settings_from",
]

_log = logging.getLogger("keel.accounts.mail")

MailBackend = Literal["console", "file", "smtp"]
SmtpSecurity = Literal["starttls", "tls", "none"]
Spawn = Callable[[str, Coroutine[Any, Any, Any]], asyncio.Task[Any]]
"""``Supervisor.spawn``: start a coroutine as a task the app owns until shutdown."""

_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True)
class Message:
    """One plain-text message. ``body`` is kept out of ``repr``: it may carry a link token."""

    to: str
    subject: str
    body: str = field(repr=False)
    kind: str
    user_id: str | None = None


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
        mail["Message-ID"] = make_msgid(domain=self._sender.rpartition("@")[2].strip("> ") or None)
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


@dataclass(frozen=True, slots=True)
class MailSettings:
    """What :func:`build_mailer` needs (``KEEL_MAIL_*`` and ``KEEL_SMTP_*``)."""

    backend: MailBackend = "console"
    sender: str = "keel <no-reply@localhost>"
    file_path: str | None = None
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_security: SmtpSecurity = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_timeout: float = 10.0


def mail_settings_from(settings: Settings) -> MailSettings:
    """What :func:`build_mailer` needs, from the settings' mail section.

    Without ``KEEL_MAIL_FROM`` mail comes from ``<service> <no-reply@localhost>``.
    """
    mail = settings.mail
    password = mail.smtp_password.get_secret_value() if mail.smtp_password else None
    return MailSettings(
        backend=mail.backend,
        sender=mail.sender or f"{settings.service_name} <no-reply@localhost>",
        file_path=mail.file,
        smtp_host=mail.smtp_host,
        smtp_port=mail.smtp_port,
        smtp_security=mail.smtp_security,
        smtp_username=mail.smtp_username,
        smtp_password=password,
        smtp_timeout=mail.smtp_timeout,
    )


def build_mailer(
    settings: MailSettings, *, development: bool, clock: Clock | None = None
) -> Mailer:
    """The configured backend. The console backend shows bodies only in development."""
    if settings.backend == "console":
        return ConsoleMailer(sender=settings.sender, show_body=development)
    if settings.backend == "file":
        if not settings.file_path:
            raise ConfigurationError("KEEL_MAIL_BACKEND=file needs KEEL_MAIL_FILE")
        return FileMailer(settings.file_path, sender=settings.sender, clock=clock)
    if settings.backend == "smtp":
        return SmtpMailer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.sender,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout,
            clock=clock,
        )
    raise ConfigurationError("KEEL_MAIL_BACKEND must be console, file or smtp")


class Outbox:
    """Delivers messages in the background, with retries; failures are logged and audited.

    ``spawn`` starts each delivery as a supervised task. ``backoff`` holds the
    delays before the second, third... attempt (its length + 1 is the number
    of attempts). ``concurrency`` bounds simultaneous sends (SMTP connections),
    ``max_pending`` the messages waiting; beyond it a message fails at once.
    """

    def __init__(
        self,
        mailer: Mailer,
        *,
        spawn: Spawn,
        audit: AuditTrail | None,
        backoff: Sequence[float] = (1.0, 5.0),
        timeout: float = 30.0,
        concurrency: int = 4,
        max_pending: int = 1000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if concurrency < 1 or max_pending < 1:
            raise ValueError("concurrency and max_pending must be at least 1")
        self._mailer = mailer
        self._spawn = spawn
        self._audit = audit
        self._backoff = tuple(backoff)
        self._timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._max_pending = max_pending
        self._sleep = sleep
        self._pending: set[asyncio.Task[Any]] = set()
        self.sent = 0
        self.failed = 0

    @property
    def mailer(self) -> Mailer:
        return self._mailer

    @property
    def pending(self) -> int:
        return len(self._pending)

    def post(self, *messages: Message) -> None:
        """Queue ``messages`` for delivery and return at once. Call after the commit."""
        for message in messages:
            if len(self._pending) >= self._max_pending:
                self._start(message, self._give_up, attempts=0, error="backlog_full")
            else:
                self._start(message, self._deliver)

    async def drain(self) -> None:
        """Wait until every message posted so far is sent or given up (tests, tools)."""
        while self._pending:
            await asyncio.wait(set(self._pending))

    def _start(
        self, message: Message, work: Callable[..., Coroutine[Any, Any, None]], **kwargs: Any
    ) -> None:
        # The coroutine is created inside the task, so a task cancelled before its
        # first step leaves no never-awaited coroutine behind.
        async def run() -> None:
            await work(message, **kwargs)

        try:
            task = self._spawn("keel.mail", run())
        except RuntimeError:
            # The app is stopping: the supervisor refused (and closed) the task.
            self._dropped(message, "shutting_down")
            return
        self._pending.add(task)
        task.add_done_callback(functools.partial(self._finished, message))

    def _finished(self, message: Message, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if task.cancelled():
            self._dropped(message, "cancelled")

    def _dropped(self, message: Message, reason: str) -> None:
        self.failed += 1
        event(
            _log,
            logging.ERROR,
            "mail_dropped",
            reason=reason,
            kind=message.kind,
            user_id=message.user_id,
        )

    async def _deliver(self, message: Message) -> None:
        attempts = 0
        error = "unknown"
        for delay in (0.0, *self._backoff):
            if delay:
                await self._sleep(delay)
            attempts += 1
            try:
                async with self._slots:
                    async with asyncio.timeout(self._timeout):
                        await self._mailer.send(message)
            except Exception as exc:  # noqa: BLE001 - any backend failure is retried, then reported
                error = type(exc).__name__
                event(
                    _log,
                    logging.WARNING,
                    "mail_send_error",
                    kind=message.kind,
                    attempt=attempts,
                    error=error,
                )
            else:
                self.sent += 1
                return
        await self._give_up(message, attempts=attempts, error=error)

    async def _give_up(self, message: Message, *, attempts: int, error: str) -> None:
        self.failed += 1
        event(
            _log,
            logging.ERROR,
            "mail_send_failed",
            kind=message.kind,
            user_id=message.user_id,
            attempts=attempts,
            error=error,
        )
        if self._audit is None:
            return
        trail = self._audit
        try:
            await trail.record_alone(
                trail.event(
                    Action.MAIL_SEND_FAIL,
                    Result.FAILURE,
                    actor_type=ActorType.SYSTEM,
                    target_type="user" if message.user_id else None,
                    target_id=message.user_id,
                    details={"kind": message.kind, "attempts": attempts, "error": error},
                )
            )
        except Exception as exc:  # noqa: BLE001 - the log line above already tells the story
            event(
                _log,
                logging.ERROR,
                "audit_write_failed",
                action=Action.MAIL_SEND_FAIL.value,
                error=type(exc).__name__,
            )
