"""Handoff announcements for the team chat, paced for Telegram's group limits.

Telegram lets a bot post about 20 messages a minute to one group, and about one a second to
a chat (short bursts pass). An announcement goes out at once while the chat is within those
limits, as a new message, so the team is notified. Lines that arrive when it is not wait for
the next free slot and are then added to the latest announcement (edited while it grows, up
to Telegram's length limit) or start a new one: a burst of handoffs becomes a few messages,
not a storm of refusals. Nothing is dropped; a post that fails is reported to whoever waits
for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.command import DialogRef
from bot.metrics import Metrics
from bot.replies import RAW_FACTOR, TELEGRAM_LIMIT, html_size, split_message

log = logging.getLogger(__name__)


class Poster(Protocol):
    """Sends and edits messages in a chat (the bot, in production)."""

    async def send(self, chat_id: int, text: str) -> int:
        """Send ``text``; returns the new message's ID."""

    async def edit(self, chat_id: int, message_id: int, text: str) -> None:
        """Replace the text of a message the bot sent."""


@dataclass
class _Open:
    """The announcement being grown."""

    message_id: int
    lines: list[str]
    refs: list[DialogRef]
    started: float


@dataclass
class _Queued:
    lines: list[str]
    refs: tuple[DialogRef, ...]
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Announcer:
    """Posts handoff lines to one chat, coalescing bursts into growing messages."""

    def __init__(
        self,
        chat_id: int,
        poster: Poster,
        *,
        remember: Callable[[int, tuple[DialogRef, ...]], Awaitable[None]] | None = None,
        per_minute: int = 18,
        burst: int = 3,
        grow_for_s: float = 60.0,
        limit: int = TELEGRAM_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.chat_id = chat_id
        self._poster = poster
        self._remember = remember
        self.per_minute = per_minute  # under Telegram's 20, for what other bots' code posts
        self.burst = burst  # posts allowed within ``burst`` seconds: about one a second
        self.grow_for_s = grow_for_s
        self._limit = limit
        self._clock = clock
        self._metrics = metrics
        self._queue: list[_Queued] = []
        self._open: _Open | None = None
        self._posted: deque[float] = deque()  # when each post of the last minute was made
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._unfinished: set[asyncio.Future[bool]] = set()
        self.posts = 0  # sends and edits, for reports

    def announce(self, lines: Sequence[str], refs: Sequence[DialogRef]) -> Awaitable[bool]:
        """Queue ``lines``; the awaitable says whether they reached the chat."""
        item = _Queued(list(lines), tuple(refs))
        self._queue.append(item)
        self._unfinished.add(item.done)
        item.done.add_done_callback(self._unfinished.discard)
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="announcer")
        return item.done

    async def close(self, limit_s: float = 10.0) -> None:
        """Post what is queued (for at most ``limit_s``), then stop."""
        if self._unfinished:
            await asyncio.wait(set(self._unfinished), timeout=limit_s)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                pause = self._pause()
                if pause > 0:
                    await asyncio.sleep(pause)
                batch, self._queue = self._queue, []
                await self._post(batch, grow=pause > 0)

    def _pause(self) -> float:
        """Seconds until the chat's limits allow another post."""
        now = self._clock()
        while self._posted and now - self._posted[0] >= 60.0:
            self._posted.popleft()
        waits = [0.0]
        if len(self._posted) >= self.per_minute:
            waits.append(self._posted[-self.per_minute] + 60.0 - now)
        if len(self._posted) >= self.burst:
            waits.append(self._posted[-self.burst] + self.burst - now)
        return max(waits)

    async def _post(self, batch: list[_Queued], *, grow: bool) -> None:
        # a line too long for one message is shortened here, where it can still be told
        # apart, rather than cut wherever the limit falls (inside a tag: refused)
        lines = [
            piece
            for item in batch
            for line in item.lines
            for piece in split_message(line, self._limit)
        ]
        refs = [ref for item in batch for ref in item.refs]
        ok = True
        try:
            while lines:
                lines = await self._post_some(lines, refs, grow=grow)
                if lines:  # more than one message's worth: each waits for its own slot
                    await asyncio.sleep(self._pause())
        except Exception as err:  # whatever the poster raised: report it, keep working
            log.warning("announcement to %s failed: %s", self.chat_id, err)
            ok = False
            self._open = None
        for item in batch:
            if not item.done.done():
                item.done.set_result(ok)

    async def _post_some(self, lines: list[str], refs: list[DialogRef], *, grow: bool) -> list[str]:
        """Post as many lines as fit in one message; returns the rest.

        Lines that had to wait (``grow``) join the latest announcement when they fit.
        """
        now = self._clock()
        current = self._open
        if grow and current is not None and now - current.started <= self.grow_for_s:
            fitting = self._fitting(current.lines, lines)
            if fitting:
                grown = current.lines + lines[:fitting]
                await self._poster.edit(self.chat_id, current.message_id, "\n".join(grown))
                current.lines = grown
                current.refs += refs
                self._count("edited", fitting, joined=True)
                await self._after_post(current)
                return lines[fitting:]
        fitting = max(1, self._fitting([], lines))
        message_id = await self._poster.send(self.chat_id, "\n".join(lines[:fitting]))
        self._count("sent", fitting, joined=False)
        self._open = _Open(message_id, lines[:fitting], list(refs), now)
        await self._after_post(self._open)
        return lines[fitting:]

    def _fitting(self, existing: list[str], new: list[str]) -> int:
        """How many of ``new`` fit after ``existing`` within Telegram's length limit
        (visible text, as Telegram counts it, and raw HTML; lines are whole HTML each)."""
        width, size = html_size("\n".join(existing))
        count = 0
        for line in new:
            line_width, line_size = html_size(line)
            gap = 1 if existing or count else 0  # the newline that joins it
            width, size = width + gap + line_width, size + gap + line_size
            if width > self._limit or size > RAW_FACTOR * self._limit:
                break
            count += 1
        return count

    def _count(self, how: str, lines: int, *, joined: bool) -> None:
        """One post of ``lines`` lines; ``joined``: all of them joined a message posted before."""
        if self._metrics is not None:
            self._metrics.announcement_posts.labels(how).inc()
            self._metrics.announcement_lines_coalesced.inc(lines if joined else lines - 1)

    async def _after_post(self, message: _Open) -> None:
        self.posts += 1
        self._posted.append(self._clock())
        if self._remember is not None:
            await self._remember(message.message_id, tuple(message.refs))
