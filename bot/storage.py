"""What the bot must remember across restarts: the audit trail and the marks of updates taken.

SQLite in WAL mode, one file next to the config by default. Every call runs on one worker
thread (SQLite connections belong to a thread), so the event loop never waits on the disk.
The tables, and how an older database is brought up to date, are in :mod:`bot.schema`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from bot.config import StorageSettings
from bot.schema import migrate_sqlite

T = TypeVar("T")

MARKS_KEPT = timedelta(days=7)
CSV_HEADER = (
    "time",
    "user_id",
    "chat_id",
    "dialog",
    "target",
    "action",  # transfer | finish
    "outcome",
    "latency_ms",
    "update_id",
)


def utc_now() -> datetime:
    """Now, in UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class AuditEntry:
    """One transfer or finish attempt of one dialog."""

    time: datetime
    user_id: int
    chat_id: int
    action: str
    dialog: str
    target: str
    outcome: str
    latency_ms: int
    update_id: int | None

    def csv_row(self) -> tuple[str | int | None, ...]:
        """The row of ``python -m bot audit --csv``."""
        return (
            self.time.isoformat(),
            self.user_id,
            self.chat_id,
            self.dialog,
            self.target,
            self.action,
            self.outcome,
            self.latency_ms,
            self.update_id,
        )


class Mark(StrEnum):
    """What taking the mark of an update found."""

    NEW = "new"  # first time: carry it out
    DONE = "done"  # carried out already: a redelivery, drop it
    RUNNING = "running"  # being carried out right now (here, or by another instance): drop it
    RESUMED = "resumed"  # a run that died had it, before sending anything: carry it out
    CUT_OFF = "cut_off"  # a run that died had it, and may have sent it: look, never resend


class Storage(Protocol):
    """Where the audit trail and the update marks live: SQLite for one instance, PostgreSQL
    (``storage.url``) for several behind a load balancer."""

    shared: bool
    """Whether several running bots use it at once (then one may die while others go on)."""

    async def open(self) -> None:
        """Connect; bring the tables up to the current schema version (raises
        :class:`bot.schema.SchemaTooNew` for a newer one); forget marks older than a week."""

    async def close(self) -> None:
        """Disconnect."""

    async def take(self, key: str, payload: str, *, sent: bool = False) -> Mark:
        """Take the mark of an update and keep the update (the inbox), atomically, before
        Telegram is told it arrived; adopts it from a run that died. ``sent``: a new mark is
        marked sent at once, and is on disk when this returns."""

    async def sending(self, key: str) -> None:
        """A write to Bitrix24 for this update may go out now: never carry it out again
        (on disk when this returns)."""

    async def flush(self) -> None:
        """The updates taken so far are on disk when this returns (before Telegram is told
        they arrived)."""

    async def done(self, key: str) -> None:
        """The update was carried out to the end."""

    async def orphans(self) -> list[tuple[str, str]]:
        """``(key, payload)`` of the unfinished updates of runs that are gone, oldest first."""

    async def record(self, entries: Sequence[AuditEntry]) -> None:
        """Add entries to the audit trail."""

    async def history(
        self, *, dialog: str | None = None, target: str | None = None, limit: int = 10
    ) -> list[AuditEntry]:
        """The latest entries about a dialog or a target, newest first."""

    async def since(self, start: datetime) -> list[AuditEntry]:
        """Every entry from ``start`` on, oldest first."""

    async def put_pending(self, key: str, data: str, created: float) -> None:
        """Store (or replace, unclaimed) what a message's buttons stand for."""

    async def claim_pending(self, key: str, since: float) -> str | Mark:
        """Claim a message's buttons once: their data; ``Mark.DONE`` when another tap has
        them; ``Mark.CUT_OFF`` when unknown or older than ``since``."""

    async def get_pending(self, key: str, since: float) -> tuple[str, bool] | None:
        """A message's button data and whether it is claimed; None if unknown or old."""

    async def drop_pending(self, key: str) -> None:
        """Forget a message's buttons."""

    async def remember(self, key: str, dialogs: str, created: float) -> None:
        """Note which dialogs a message of the bot is about (JSON)."""

    async def about(self, key: str) -> str | None:
        """The dialogs a message of the bot is about (JSON), if known."""


class Sync(StrEnum):
    """Whether a storage call waits for the disk before its caller hears back."""

    NO = "no"  # committed: a kill -9 keeps it, a power cut may not
    TAKEN = "taken"  # on disk if updates were taken since the last sync (a flush)
    NOW = "now"  # on disk


@dataclass(frozen=True)
class _Job(Generic[T]):
    """A call queued for the storage thread, and how its caller hears back."""

    work: Callable[[sqlite3.Connection], T]
    sync: Sync
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]

    def settle(self, result: T | None, error: BaseException | None) -> None:
        """Hand the outcome to the caller, on its event loop (from the storage thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def open_storage(settings: StorageSettings, boot: str) -> Storage:
    """The storage the config names: PostgreSQL for a ``url``, else the SQLite file."""
    if settings.url is not None:
        from bot.storage_pg import PostgresStorage  # asyncpg only when it is used

        return PostgresStorage(settings.url.get_secret_value(), boot)
    return SqliteStorage(settings.path, boot)


class SqliteStorage:
    """The audit trail and the update marks, in one SQLite file.

    Commits are written to the WAL without waiting for the disk (``synchronous=NORMAL``): a
    ``kill -9`` keeps them (they are in the kernel's page cache), only a power cut or a kernel
    crash may lose the last ones. Where that matters the bot waits for the disk: the updates
    before Telegram is told they arrived (:meth:`flush`), the sent mark before a write to
    Bitrix24 (:meth:`sending`). The WAL is a log, so one sync keeps every commit before it;
    and what is queued together shares one (a burst costs a sync, not one a command). A
    transfer typed in full, alone, is taken already marked sent (see
    :class:`handlers.middlewares.Intake`), so its update and its mark share one sync, done
    as it is taken. A flush with nothing taken since the last one costs no trip to the
    storage thread.
    """

    shared = False  # one file serves one running bot

    def __init__(self, path: str, boot: str) -> None:
        self.path = path
        self.boot = boot
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._synced = 0  # the connection's total_changes at the last sync
        self._unsynced = False  # updates taken since the last sync (what a flush is for)
        # the event loop's view: updates taken since the last flush asked for a sync, and that
        # flush; a flush with nothing new waits for it, or for nothing, without a round trip
        # to the storage thread
        self._unflushed = False
        self._flushing: asyncio.Future[None] | None = None

    async def _run(self, work: Callable[[sqlite3.Connection], T], sync: Sync = Sync.NO) -> T:
        """``work`` on the storage thread; ``sync``: whether it is on disk (with everything
        before it) when this returns."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="storage", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(work, sync, loop, future))
        return await future

    def _serve(self) -> None:
        """The storage thread: run what is queued, in order; then, if any of it must be on
        disk, one sync for all of it before those callers hear back."""
        while True:
            job = self._jobs.get()
            waiting: list[tuple[_Job[Any], Any]] = []
            while job is not None:
                try:
                    result = self._with(job.work)
                except BaseException as err:  # the caller's to handle, not this thread's
                    job.settle(None, err)
                else:
                    if job.sync is Sync.NO or (job.sync is Sync.TAKEN and not self._unsynced):
                        job.settle(result, None)
                    else:
                        waiting.append((job, result))
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
            if waiting:
                error: OSError | None = None
                try:
                    self._sync()
                except OSError as err:
                    error = err
                for done, result in waiting:
                    done.settle(result, error)
            if job is None:  # close() queued it last: nothing comes after it
                return

    def _sync(self) -> None:
        """Wait for the disk to hold every commit so far: one ``fdatasync`` of the WAL (a
        sync is per file, whichever descriptor; SQLite recovers the WAL up to its last
        whole commit), none when nothing changed since the last one."""
        db = self._db
        if db is None or self.path in ("", ":memory:") or db.total_changes == self._synced:
            self._unsynced = False  # nothing left to put on disk, or no disk
            return
        changes = db.total_changes
        wal = os.open(f"{self.path}-wal", os.O_RDONLY)
        try:
            os.fdatasync(wal)
        finally:
            os.close(wal)
        self._synced = changes
        self._unsynced = False

    def _with(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self._db = self._connect()
        return work(self._db)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # commits do not wait for the disk; _sync does, where the bot needs it
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            migrate_sqlite(db, f"storage.path {self.path}")
            cutoff = utc_now() - MARKS_KEPT
            db.execute("DELETE FROM marks WHERE taken_at < ?", (cutoff.isoformat(),))
            db.execute("DELETE FROM pending WHERE created < ?", (cutoff.timestamp(),))
            db.execute("DELETE FROM about WHERE created < ?", (cutoff.timestamp(),))
        except BaseException:
            db.close()  # a database refused (or a step that failed) is not used
            raise
        return db

    async def open(self) -> None:
        """Create the file if needed, bring its tables up to the current schema version,
        forget marks older than a week."""
        await self._run(lambda db: None)

    async def close(self) -> None:
        """Close the database and its thread."""

        def close(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None

        if self._db is not None:
            await self._run(close)
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def flush(self) -> None:
        """Wait until the updates taken so far are on disk (before Telegram is told they
        arrived): one sync for all of them, none when there are none."""
        if self._unflushed:
            self._unflushed = False
            self._flushing = asyncio.ensure_future(self._run(lambda db: None, Sync.TAKEN))
            # its callers may all be gone (cancelled) when it fails: the failure is theirs to
            # raise, or nobody's, never an unretrieved-exception warning
            self._flushing.add_done_callback(_retrieved)
        flushing = self._flushing
        if flushing is None:
            return
        try:
            await asyncio.shield(flushing)
        except OSError:
            self._unflushed = True  # not on disk: the next flush tries again
            raise

    # ---- marks ------------------------------------------------------------------------

    async def take(self, key: str, payload: str, *, sent: bool = False) -> Mark:
        """Take the mark of an update and keep the update, in one statement each; one file
        serves one running bot, so a mark of another run is a mark of a run that died.
        ``sent``: a new mark is marked sent at once, and is on disk when this returns (a
        transfer typed in full, alone: one sync keeps the update and the mark, before its
        first look).

        Otherwise not waited for on disk here: the updates of one ``getUpdates`` are taken one
        after another, and :meth:`flush` keeps them all with one sync before Telegram hears of
        it.
        """

        def take(db: sqlite3.Connection) -> Mark:
            inserted = db.execute(
                "INSERT OR IGNORE INTO marks (key, taken_at, boot, payload, sent)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, utc_now().isoformat(), self.boot, payload, int(sent)),
            ).rowcount
            if inserted:
                self._unsynced = True
                return Mark.NEW
            boot, done, was_sent = db.execute(
                "SELECT boot, done, sent FROM marks WHERE key = ?", (key,)
            ).fetchone()
            if done:
                return Mark.DONE
            if boot == self.boot:
                return Mark.RUNNING
            adopted = db.execute(
                "UPDATE marks SET boot = ? WHERE key = ? AND boot = ? AND done = 0",
                (self.boot, key, boot),
            ).rowcount
            if not adopted:
                return Mark.RUNNING
            self._unsynced = True
            return Mark.CUT_OFF if was_sent else Mark.RESUMED

        if sent:
            try:
                return await self._run(take, Sync.NOW)
            except BaseException:
                # the row may be written and not synced (the sync failed): the next flush
                # must sync it before Telegram hears of the update
                self._unflushed = True
                raise
        self._unflushed = True  # a flush from now on queues its sync after this take
        return await self._run(take)

    async def sending(self, key: str) -> None:
        """A write to Bitrix24 for this update may go out now: never carry it out again.
        On disk before it returns (with whatever was written before it: the update's mark,
        a tap's claim), so that even a power cut cannot make the next run send it again."""
        await self._run(
            lambda db: db.execute("UPDATE marks SET sent = 1 WHERE key = ?", (key,)), Sync.NOW
        )

    async def done(self, key: str) -> None:
        """The update was carried out to the end.

        Not waited for on disk: a ``kill -9`` keeps it; a power cut right after may lose it
        (and the audit row before it), and then the next run tells the supervisor the command
        was cut off, with where the dialogs are now, as after a ``kill -9`` between the answer
        and this mark. Never a second transfer: the sent mark was on disk first."""
        await self._run(lambda db: db.execute("UPDATE marks SET done = 1 WHERE key = ?", (key,)))

    async def orphans(self) -> list[tuple[str, str]]:
        """The unfinished updates of earlier runs, oldest first."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT key, payload FROM marks WHERE done = 0 AND boot != ?"
                " AND payload IS NOT NULL ORDER BY taken_at, rowid",
                (self.boot,),
            ).fetchall()
        )
        return [(str(key), str(payload)) for key, payload in rows]

    # ---- buttons and what messages are about -----------------------------------------

    async def put_pending(self, key: str, data: str, created: float) -> None:
        """Store (or replace, unclaimed) what a message's buttons stand for."""
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO pending (key, data, created, claimed) VALUES (?, ?, ?, 0)",
                (key, data, created),
            )
        )

    async def claim_pending(self, key: str, since: float) -> str | Mark:
        """Claim a message's buttons once (one UPDATE: two taps cannot both win)."""

        def claim(db: sqlite3.Connection) -> str | Mark:
            won = db.execute(
                "UPDATE pending SET claimed = 1 WHERE key = ? AND claimed = 0 AND created >= ?",
                (key, since),
            ).rowcount
            row = db.execute(
                "SELECT data, claimed, created FROM pending WHERE key = ?", (key,)
            ).fetchone()
            if row is None or row[2] < since:
                return Mark.CUT_OFF
            return str(row[0]) if won else Mark.DONE

        return await self._run(claim)

    async def get_pending(self, key: str, since: float) -> tuple[str, bool] | None:
        """A message's button data and whether it is claimed; None if unknown or old."""
        row = await self._run(
            lambda db: db.execute(
                "SELECT data, claimed FROM pending WHERE key = ? AND created >= ?", (key, since)
            ).fetchone()
        )
        return None if row is None else (str(row[0]), bool(row[1]))

    async def drop_pending(self, key: str) -> None:
        """Forget a message's buttons."""
        await self._run(lambda db: db.execute("DELETE FROM pending WHERE key = ?", (key,)))

    async def remember(self, key: str, dialogs: str, created: float) -> None:
        """Note which dialogs a message of the bot is about (JSON)."""
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO about (key, dialogs, created) VALUES (?, ?, ?)",
                (key, dialogs, created),
            )
        )

    async def about(self, key: str) -> str | None:
        """The dialogs a message of the bot is about (JSON), if known."""
        row = await self._run(
            lambda db: db.execute("SELECT dialogs FROM about WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else str(row[0])

    # ---- audit ------------------------------------------------------------------------

    async def record(self, entries: Sequence[AuditEntry]) -> None:
        """Add entries to the audit trail."""

        def record(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO audit (time, user_id, chat_id, action, dialog, target, outcome,"
                " latency_ms, update_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.time.isoformat(),
                        e.user_id,
                        e.chat_id,
                        e.action,
                        e.dialog,
                        e.target,
                        e.outcome,
                        e.latency_ms,
                        e.update_id,
                    )
                    for e in entries
                ],
            )

        if entries:
            await self._run(record)

    async def history(
        self, *, dialog: str | None = None, target: str | None = None, limit: int = 10
    ) -> list[AuditEntry]:
        """The latest entries about a dialog or a target, newest first."""
        column, value = ("dialog", dialog) if dialog is not None else ("target", target)
        query = (
            "SELECT time, user_id, chat_id, action, dialog, target, outcome, latency_ms,"
            f" update_id FROM audit WHERE {column} = ? ORDER BY id DESC LIMIT ?"
        )
        rows = await self._run(lambda db: db.execute(query, (value, limit)).fetchall())
        return [_entry(row) for row in rows]

    async def since(self, start: datetime) -> list[AuditEntry]:
        """Every entry from ``start`` on, oldest first."""
        rows = await self._run(lambda db: db.execute(_SINCE, (start.isoformat(),)).fetchall())
        return [_entry(row) for row in rows]


_SINCE = (
    "SELECT time, user_id, chat_id, action, dialog, target, outcome, latency_ms,"
    " update_id FROM audit WHERE time >= ? ORDER BY id"
)


class NoAuditTrail(Exception):
    """The audit export found no audit trail to read; it never creates a database."""


def read_audit(path: str, start: datetime) -> list[AuditEntry]:
    """The SQLite audit trail from ``start`` on, opened read-only: a missing file stays missing
    (:class:`NoAuditTrail`), and nothing in the file is changed."""
    if path == ":memory:":
        raise NoAuditTrail("storage.path is :memory:, so no audit trail is kept")
    file = Path(path)
    if not file.exists():
        raise NoAuditTrail(
            f"no database at {path}: the bot has not run with this config yet"
            " (it creates the file when it starts)"
        )
    try:
        db = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise NoAuditTrail(f"{path}: cannot be read ({err})") from None
    try:
        rows = db.execute(_SINCE, (start.isoformat(),)).fetchall()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            raise NoAuditTrail(f"{path}: no audit trail in this database yet") from None
        raise NoAuditTrail(f"{path}: cannot be read ({err})") from None
    except sqlite3.DatabaseError as err:  # not a database at all
        raise NoAuditTrail(f"{path}: cannot be read ({err})") from None
    finally:
        db.close()
    return [_entry(row) for row in rows]


async def export_audit(settings: StorageSettings, start: datetime) -> list[AuditEntry]:
    """The audit trail the config names, from ``start`` on, read only (never created)."""
    if settings.url is not None:
        from bot.storage_pg import read_audit as read_from_postgres  # asyncpg only when used

        return await read_from_postgres(settings.url.get_secret_value(), start)
    return await asyncio.to_thread(read_audit, settings.path, start)


def _entry(row: tuple[object, ...]) -> AuditEntry:
    time, user_id, chat_id, action, dialog, target, outcome, latency_ms, update_id = row
    return AuditEntry(
        datetime.fromisoformat(str(time)),
        int(str(user_id)),
        int(str(chat_id)),
        str(action),
        str(dialog),
        str(target),
        str(outcome),
        int(str(latency_ms)),
        int(str(update_id)) if update_id is not None else None,
    )


def to_csv(entries: Sequence[AuditEntry]) -> str:
    """The audit export: a header line, then one row per entry."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(entry.csv_row() for entry in entries)
    return out.getvalue()
