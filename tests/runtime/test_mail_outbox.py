"""A committed registration's mail survives ``kill -9`` of the server (real ``keel serve``).

The first server writes the outbox but does not send (``KEEL_MAIL_SENDER_ENABLED=false``
holds its senders back); it is killed with SIGKILL right after the registration
commits, so nothing held in memory can help. A second server on the same
database, two worker processes each running a sender, delivers the message
exactly once, and as many more queued meanwhile, each once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from keel.accounts import Message, Outbox, OutboxMessage
from keel.accounts.sealing import BodySealer
from keel.db import Database, migrate
from keel.settings import Settings
from tests.runtime._harness import running_server

pytestmark = pytest.mark.runtime

FACTORY = "keel.api.app:create_app"
EMAIL = "crash@example.com"


def _outbox(database_url: str) -> list[tuple[str, str]]:
    async def read() -> list[tuple[str, str]]:
        database = Database(Settings(database_url=database_url).database)
        try:
            async with database.unit_of_work() as uow:
                query = select(OutboxMessage.id, OutboxMessage.status)
                return [(str(i), s) for i, s in (await uow.session.execute(query)).all()]
        finally:
            await database.dispose()

    return asyncio.run(read())


def _queue(database_url: str, count: int) -> None:
    """Stage ``count`` more messages, as another instance would have."""

    class Unused:
        async def send(self, message: Message) -> None:
            raise AssertionError("this process never sends")

    async def stage() -> None:
        settings = Settings(database_url=database_url)
        database = Database(settings.database)
        keys = settings.audit
        outbox = Outbox(
            Unused(),
            database=database,
            sealer=BodySealer(keys.keys, keys.current_key_id),
            audit=None,
        )
        messages = [
            Message(to=f"queued{n}@example.com", subject="s", body="b", kind="notice")
            for n in range(count)
        ]
        try:
            async with database.unit_of_work() as uow:
                outbox.stage(uow, messages)
        finally:
            await database.dispose()

    asyncio.run(stage())


def _mail(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_registration_mail_is_sent_once_after_the_server_is_killed_before_sending(
    tmp_path: Path, database_url: str
) -> None:
    asyncio.run(asyncio.to_thread(migrate.upgrade, Settings(database_url=database_url).database))
    mail_file = tmp_path / "mail.jsonl"
    env = {
        "DATABASE_URL": database_url,
        "WEB_CONCURRENCY": "2",
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(mail_file),
        "KEEL_MAIL_POLL_INTERVAL": "0.2",
        "KEEL_MAIL_SENDER_ENABLED": "false",
    }
    with running_server(tmp_path / "first", FACTORY, env=env) as first:
        body = {"email": EMAIL, "password": "correct horse battery staple 42"}
        response = first.client.post(
            "/auth/register", json=body, headers={"Connection": "close"}, timeout=30.0
        )
        assert response.status_code == 202, response.text
        os.killpg(first.process.pid, signal.SIGKILL)
        assert first.wait_exit() == -signal.SIGKILL
    [(message_id, status)] = _outbox(database_url)
    assert status == "pending"
    assert _mail(mail_file) == []
    _queue(database_url, 20)

    env["KEEL_MAIL_SENDER_ENABLED"] = "true"
    with running_server(tmp_path / "second", FACTORY, env=env) as second:
        deadline = time.monotonic() + 30
        while len(_mail(mail_file)) < 21:
            assert time.monotonic() < deadline, f"no mail was sent:\n{second.logs()}"
            time.sleep(0.1)
        time.sleep(1.0)  # five polls by each worker's sender: none sends it again
    mail = _mail(mail_file)
    assert len(mail) == 21
    assert len({m["idempotency_key"] for m in mail}) == 21  # none twice
    [sent] = [m for m in mail if m["to"] == EMAIL]
    assert (sent["kind"], sent["idempotency_key"]) == ("verify_email", message_id)
    assert "#token=" in sent["body"]
    rows = _outbox(database_url)
    assert len(rows) == 21
    assert {status for _, status in rows} == {"sent"}
