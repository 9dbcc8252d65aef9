"""FileInvalidations: one counter file keeps every worker's near cache honest, across processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from keel.cache import FileInvalidations


def _channel(path: Path) -> tuple[FileInvalidations, list[str | None]]:
    channel = FileInvalidations(path)
    heard: list[str | None] = []
    channel.on_invalidate(heard.append)
    return channel, heard


async def test_a_publish_is_seen_by_every_worker_on_its_next_look(tmp_path: Path) -> None:
    a, heard_a = _channel(tmp_path / "changes")
    b, heard_b = _channel(tmp_path / "changes")
    assert a.usable
    assert b.usable
    stamp = b.stamp
    await a.publish("user-1")
    assert heard_a == ["user-1"]  # the publisher forgets that one scope at once
    assert b.usable  # looking is what catches up
    assert heard_b == [None]
    assert b.stamp > stamp
    assert b.usable
    assert heard_b == [None]  # nothing new: nothing dropped again


async def test_a_publish_from_another_process_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "changes"
    mine, heard = _channel(path)
    assert mine.usable
    script = (
        "import asyncio, sys\n"
        "from keel.cache import FileInvalidations\n"
        "asyncio.run(FileInvalidations(sys.argv[1]).publish('user-9'))\n"
    )
    command = [sys.executable, "-c", script, str(path)]
    await asyncio.to_thread(subprocess.run, command, check=True, timeout=60)
    assert mine.usable
    assert heard == [None]


async def test_publishing_after_someone_else_did_drops_everything(tmp_path: Path) -> None:
    a, heard_a = _channel(tmp_path / "changes")
    b, _ = _channel(tmp_path / "changes")
    assert a.usable
    await b.publish("user-2")  # a has not looked since
    await a.publish("user-1")
    assert heard_a == [None, "user-1"]


async def test_an_unusable_path_makes_the_channel_unusable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    channel, heard = _channel(tmp_path / "a-file" / "changes")
    assert not channel.usable
    assert heard == [None]
    await channel.publish("user-1")  # nothing to move on: still safe to call
    assert not channel.usable


async def test_the_counter_file_is_private(tmp_path: Path) -> None:
    channel, _ = _channel(tmp_path / "state" / "changes")
    assert channel.usable
    assert (tmp_path / "state" / "changes").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    channel.close()
