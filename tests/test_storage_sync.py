"""When the SQLite storage waits for the disk: each ``fdatasync`` of its WAL counted, never
timed. The bot as a process under strace is in test_fsyncs.py; these pin the rules down one
call at a time."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import storage
from bot.storage import Mark, SqliteStorage


class Disk:
    """``os.fdatasync`` as the storage thread calls it: counted, and held while ``gate`` is
    clear (to catch a caller that does not wait); ``fail`` makes the next one fail."""

    def __init__(self) -> None:
        self.syncs = 0
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def fdatasync(self, fd: int) -> None:
        self.started.set()
        self.gate.wait(10)
        if self.fail:
            self.fail = False
            raise OSError(5, "Input/output error")
        self.syncs += 1


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    fake = Disk()
    monkeypatch.setattr(storage.os, "fdatasync", fake.fdatasync)
    return fake


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    kept = SqliteStorage(str(tmp_path / "handoff.sqlite3"), boot="this-run")
    await kept.open()
    try:
        yield kept
    finally:
        await kept.close()


async def test_a_transfer_taken_marked_sent_is_on_disk_when_the_take_returns(
    store: SqliteStorage, disk: Disk
) -> None:
    assert await store.take("u:1:1", "{}", sent=True) is Mark.NEW
    assert disk.syncs == 1, "the update and its sent mark, with one sync, before the look"
    await store.flush()  # what confirms it to Telegram: nothing left to sync
    assert disk.syncs == 1


async def test_a_take_marked_sent_returns_only_once_its_sync_is_done(
    store: SqliteStorage, disk: Disk
) -> None:
    disk.gate.clear()  # the disk is slow
    take = asyncio.ensure_future(store.take("u:1:1", "{}", sent=True))
    assert await asyncio.to_thread(disk.started.wait, 10)
    await asyncio.sleep(0.2)
    assert not take.done(), "it returned before its update was on disk"
    disk.gate.set()
    assert await take is Mark.NEW
    assert disk.syncs == 1


async def test_a_take_marked_sent_whose_sync_failed_is_synced_by_the_next_flush(
    store: SqliteStorage, disk: Disk
) -> None:
    disk.fail = True
    with pytest.raises(OSError):
        await store.take("u:1:1", "{}", sent=True)
    assert disk.syncs == 0
    await store.flush()  # what confirms the update to Telegram
    assert disk.syncs == 1, "the update was confirmed without being on disk"


async def test_updates_taken_one_after_another_share_one_sync_at_the_flush(
    store: SqliteStorage, disk: Disk
) -> None:
    for n in range(5):
        assert await store.take(f"u:1:{n}", "{}") is Mark.NEW
    assert disk.syncs == 0, "taking alone does not wait for the disk"
    await store.flush()
    assert disk.syncs == 1
    await store.flush()
    await store.flush()
    assert disk.syncs == 1, "a flush with nothing new taken syncs nothing"


async def test_a_flush_waits_for_the_sync_an_earlier_flush_started(
    store: SqliteStorage, disk: Disk
) -> None:
    await store.take("u:1:1", "{}")
    disk.gate.clear()  # the disk is slow
    first = asyncio.ensure_future(store.flush())
    assert await asyncio.to_thread(disk.started.wait, 10)
    second = asyncio.ensure_future(store.flush())  # nothing new: it joins the first one's
    await asyncio.sleep(0.2)
    assert not first.done()
    assert not second.done(), "it returned before the update was on disk"
    disk.gate.set()
    await asyncio.gather(first, second)
    assert disk.syncs == 1


async def test_a_flush_with_nothing_new_does_not_wait_behind_another_commands_write(
    store: SqliteStorage, disk: Disk
) -> None:
    # the next getUpdates is not held up by an unrelated write stuck on a slow disk (here a
    # command's sent mark): its updates are on disk already
    await store.take("u:1:1", "{}")
    await store.flush()
    disk.gate.clear()
    disk.started.clear()
    marking = asyncio.ensure_future(store.sending("u:1:1"))
    assert await asyncio.to_thread(disk.started.wait, 10)
    await asyncio.wait_for(store.flush(), 2)
    assert not marking.done()
    disk.gate.set()
    await marking
    assert disk.syncs == 2


async def test_a_failed_sync_is_raised_and_the_next_flush_syncs_again(
    store: SqliteStorage, disk: Disk
) -> None:
    await store.take("u:1:1", "{}")
    disk.fail = True
    with pytest.raises(OSError):
        await store.flush()
    assert disk.syncs == 0
    await store.flush()
    assert disk.syncs == 1, "what the failed sync should have kept is kept now"


async def test_the_sync_is_of_the_wal_file(store: SqliteStorage, tmp_path: Path) -> None:
    seen: list[str] = []

    def fdatasync(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage.os, "fdatasync", fdatasync)
        await store.take("u:1:1", "{}", sent=True)
    assert seen == [str(tmp_path / "handoff.sqlite3-wal")]


async def test_a_failed_sync_nobody_waits_for_any_more_is_not_reported_unretrieved(
    store: SqliteStorage, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    await store.take("u:1:1", "{}")
    disk.gate.clear()
    disk.fail = True
    gone = asyncio.ensure_future(store.flush())
    assert await asyncio.to_thread(disk.started.wait, 10)
    gone.cancel()  # its caller stopped waiting (a shutdown, a timeout)
    with pytest.raises(asyncio.CancelledError):
        await gone
    disk.gate.set()
    await store.take("u:1:2", "{}")
    await store.flush()  # another flush takes over; the failed one is nobody's now
    assert disk.syncs == 1
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
