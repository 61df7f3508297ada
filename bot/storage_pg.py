"""The storage in PostgreSQL (asyncpg), so that several bot instances share one set of marks.

Two instances behind a load balancer may receive the same update at the same moment; the
mark is an ``INSERT ... ON CONFLICT DO NOTHING`` on its primary key, so exactly one of them
wins it, in the database, before either calls Bitrix24.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from bot.schema import migrate_postgres
from bot.storage import MARKS_KEPT, AuditEntry, Mark, NoAuditTrail, utc_now

log = logging.getLogger(__name__)

_COLUMNS = "time, user_id, chat_id, action, dialog, target, outcome, latency_ms, update_id"


HEARTBEAT_S = 5.0
DEAD_AFTER = timedelta(seconds=20)  # a run silent this long is gone: its marks were cut off


class PostgresStorage:
    """The audit trail and the update marks in PostgreSQL."""

    shared = True

    def __init__(self, url: str, boot: str) -> None:
        self._url = url
        self.boot = boot
        self._pool: asyncpg.Pool | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return "PostgresStorage(***)"  # the URL holds a password

    async def open(self) -> None:
        """Connect, bring the tables up to the current schema version, forget marks older
        than a week."""
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=4)
        try:
            await self._prepare()
        except BaseException:
            await self._pool.close()  # a database refused is not used
            self._pool = None
            raise
        await self._beat()
        self._heartbeat = asyncio.create_task(self._beating(), name="storage-heartbeat")

    async def _prepare(self) -> None:
        async with self._db().acquire() as db:
            await migrate_postgres(db, "storage.url")
            await db.execute("DELETE FROM marks WHERE taken_at < $1", utc_now() - MARKS_KEPT)
            await db.execute("DELETE FROM boots WHERE seen < $1", utc_now() - MARKS_KEPT)
            old = (utc_now() - MARKS_KEPT).timestamp()
            await db.execute("DELETE FROM pending WHERE created < $1", old)
            await db.execute("DELETE FROM about WHERE created < $1", old)

    async def _beat(self) -> None:
        await self._db().execute(
            "INSERT INTO boots (boot, seen) VALUES ($1, $2)"
            " ON CONFLICT (boot) DO UPDATE SET seen = EXCLUDED.seen",
            self.boot,
            utc_now(),
        )

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._beat()
            except (asyncpg.PostgresError, OSError) as err:
                log.warning("storage heartbeat failed: %s", type(err).__name__)

    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the storage is not open")
        return self._pool

    async def close(self) -> None:
        """Say this run is gone (the others adopt what it leaves at once), close the pool."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self._pool is not None:
            try:
                await self._pool.execute("DELETE FROM boots WHERE boot = $1", self.boot)
            except (asyncpg.PostgresError, OSError) as err:
                log.warning("could not sign off from the storage: %s", type(err).__name__)
            await self._pool.close()
            self._pool = None

    async def take(self, key: str, payload: str, *, sent: bool = False) -> Mark:
        """Take the mark of an update and keep the update; exactly one instance gets NEW,
        and exactly one adopts it from a run that died. ``sent``: a new mark is marked sent
        at once."""
        db = self._db()
        won = await db.fetchval(
            "INSERT INTO marks (key, taken_at, boot, payload, sent) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (key) DO NOTHING RETURNING key",
            key,
            utc_now(),
            self.boot,
            payload,
            sent,
        )
        if won is not None:
            return Mark.NEW
        row = await db.fetchrow(
            "SELECT m.done, m.boot, m.sent, m.boot = $2 AS mine, b.seen > $3 AS alive"
            " FROM marks m LEFT JOIN boots b ON b.boot = m.boot WHERE m.key = $1",
            key,
            self.boot,
            utc_now() - DEAD_AFTER,
        )
        if row is None or row["done"]:
            return Mark.DONE
        if row["mine"] or row["alive"]:
            return Mark.RUNNING  # on it right now, here or in another live instance
        adopted = await db.fetchval(
            "UPDATE marks SET boot = $1 WHERE key = $2 AND boot = $3 AND NOT done RETURNING key",
            self.boot,
            key,
            row["boot"],
        )
        if adopted is None:
            return Mark.RUNNING  # another instance adopted it first
        return Mark.CUT_OFF if row["sent"] else Mark.RESUMED

    async def sending(self, key: str) -> None:
        """A write to Bitrix24 for this update may go out now: never carry it out again."""
        await self._db().execute("UPDATE marks SET sent = TRUE WHERE key = $1", key)

    async def done(self, key: str) -> None:
        """The update was carried out to the end."""
        await self._db().execute("UPDATE marks SET done = TRUE WHERE key = $1", key)

    async def flush(self) -> None:
        """Nothing to wait for: every statement above was committed, durably, when it
        returned."""

    async def orphans(self) -> list[tuple[str, str]]:
        """The unfinished updates of runs whose heartbeat stopped, oldest first."""
        rows = await self._db().fetch(
            "SELECT m.key, m.payload FROM marks m LEFT JOIN boots b ON b.boot = m.boot"
            " WHERE NOT m.done AND m.payload IS NOT NULL AND m.boot != $1"
            " AND (b.seen IS NULL OR b.seen <= $2) ORDER BY m.taken_at",
            self.boot,
            utc_now() - DEAD_AFTER,
        )
        return [(str(row["key"]), str(row["payload"])) for row in rows]

    async def put_pending(self, key: str, data: str, created: float) -> None:
        """Store (or replace, unclaimed) what a message's buttons stand for."""
        await self._db().execute(
            "INSERT INTO pending (key, data, created, claimed) VALUES ($1, $2, $3, FALSE)"
            " ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, created = EXCLUDED.created,"
            " claimed = FALSE",
            key,
            data,
            created,
        )

    async def claim_pending(self, key: str, since: float) -> str | Mark:
        """Claim a message's buttons once, whichever instance the taps reach."""
        db = self._db()
        won = await db.fetchval(
            "UPDATE pending SET claimed = TRUE WHERE key = $1 AND NOT claimed AND created >= $2"
            " RETURNING data",
            key,
            since,
        )
        if won is not None:
            return str(won)
        row = await db.fetchrow("SELECT created FROM pending WHERE key = $1", key)
        return Mark.CUT_OFF if row is None or row["created"] < since else Mark.DONE

    async def get_pending(self, key: str, since: float) -> tuple[str, bool] | None:
        """A message's button data and whether it is claimed; None if unknown or old."""
        row = await self._db().fetchrow(
            "SELECT data, claimed FROM pending WHERE key = $1 AND created >= $2", key, since
        )
        return None if row is None else (str(row["data"]), bool(row["claimed"]))

    async def drop_pending(self, key: str) -> None:
        """Forget a message's buttons."""
        await self._db().execute("DELETE FROM pending WHERE key = $1", key)

    async def remember(self, key: str, dialogs: str, created: float) -> None:
        """Note which dialogs a message of the bot is about (JSON)."""
        await self._db().execute(
            "INSERT INTO about (key, dialogs, created) VALUES ($1, $2, $3)"
            " ON CONFLICT (key) DO UPDATE SET dialogs = EXCLUDED.dialogs",
            key,
            dialogs,
            created,
        )

    async def about(self, key: str) -> str | None:
        """The dialogs a message of the bot is about (JSON), if known."""
        value = await self._db().fetchval("SELECT dialogs FROM about WHERE key = $1", key)
        return None if value is None else str(value)

    async def record(self, entries: Sequence[AuditEntry]) -> None:
        """Add entries to the audit trail."""
        if entries:
            await self._db().executemany(
                f"INSERT INTO audit ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                [
                    (
                        e.time,
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

    async def history(
        self, *, dialog: str | None = None, target: str | None = None, limit: int = 10
    ) -> list[AuditEntry]:
        """The latest entries about a dialog or a target, newest first."""
        column, value = ("dialog", dialog) if dialog is not None else ("target", target)
        rows = await self._db().fetch(
            f"SELECT {_COLUMNS} FROM audit WHERE {column} = $1 ORDER BY id DESC LIMIT $2",
            value,
            limit,
        )
        return [_entry(row) for row in rows]

    async def since(self, start: datetime) -> list[AuditEntry]:
        """Every entry from ``start`` on, oldest first."""
        rows = await self._db().fetch(
            f"SELECT {_COLUMNS} FROM audit WHERE time >= $1 ORDER BY id", start
        )
        return [_entry(row) for row in rows]


async def read_audit(url: str, start: datetime) -> list[AuditEntry]:
    """The audit trail from ``start`` on, read only: no tables are created, no run is noted."""
    try:
        db = await asyncpg.connect(url)
    except (asyncpg.PostgresError, OSError) as err:  # never the URL: it holds a password
        raise NoAuditTrail(
            f"PostgreSQL (storage.url): cannot connect ({type(err).__name__})"
        ) from None
    try:
        rows = await db.fetch(f"SELECT {_COLUMNS} FROM audit WHERE time >= $1 ORDER BY id", start)
    except asyncpg.UndefinedTableError:
        raise NoAuditTrail(
            "PostgreSQL (storage.url): no audit trail in this database yet"
        ) from None
    finally:
        await db.close()
    return [_entry(row) for row in rows]


def _entry(row: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        row["time"],
        row["user_id"],
        row["chat_id"],
        row["action"],
        row["dialog"],
        row["target"],
        row["outcome"],
        row["latency_ms"],
        row["update_id"],
    )
