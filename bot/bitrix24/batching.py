"""Calls made together go out together, as one ``batch`` request.

Bitrix24 counts a ``batch`` of up to 50 commands as one request for its leaky bucket, and
each command still gets its own result or error. Calls made in the same moment, and calls
that wait for the bucket, leave together as soon as it lets one request through: a burst of
transfers finishes in a fraction of the time the bucket would allow one call at a time.

The bucket's burst is not spent on small batches while more calls are coming: a call goes
out at once only while the bucket holds nothing of ours, when it is alone (nothing else of
ours queued or under way, and the bucket holds only a few), or when it is lone (few others
queued or under way, none just before it); a lone command, or commands one at a time, never
wait. Otherwise calls gather until a batch is full or none has come for :data:`QUIET_S`.
Waiting is cheap there: a token not taken now stays in the bucket.

A *group* of calls (a transfer and the look that verifies it) always travels in one batch,
in order: the portal runs a batch's commands one after another, so the look sees the dialog
as the transfer left it. A lone call goes out on its own, as a plain request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiolimiter import AsyncLimiter

from bot.bitrix24.codes import BAD_RESPONSE, NETWORK_ERROR, RESULT_FALSE
from bot.bitrix24.errors import BitrixError

log = logging.getLogger(__name__)

MAX_BATCH = 50  # Bitrix24 refuses more commands in one batch
# in a burst, a batch leaves when no call has joined it for this long: its calls come in
# waves (each sync of the storage lets a few dozen go), a few to twenty milliseconds apart
QUIET_S = 0.05
LONE_CALLS = 4  # calls queued or unanswered up to which they go at once (a command's: 1, 2)
# requests in the bucket up to which a call alone goes at once: a command's own (its look,
# then its transfer with the look that verifies it)
ALONE_REQUESTS = 2
# a call after this long with none is a lone one (a command's next call comes a round trip
# after its last); calls of a burst come a millisecond or so apart
LONE_GAP_S = 0.02
BATCH = "batch"

Post = Callable[[str, dict[str, Any]], Awaitable[Any]]
Call = tuple[str, dict[str, Any]]  # (method, params)


@dataclass
class Waiting:
    """One queued call: its future, and how long it waited for the bucket."""

    method: str
    params: dict[str, Any]
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    queued_at: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    sent_at: float | None = None
    # set when the whole request failed (not just this call inside a batch): then the
    # request may be repeated as a whole, whereas one command's own error is final
    request_error: BitrixError | None = None

    @property
    def queued_s(self) -> float:
        """Seconds spent waiting for the bucket before the request left (0 if it has not)."""
        return 0.0 if self.sent_at is None else self.sent_at - self.queued_at


def command(method: str, params: dict[str, Any]) -> str:
    """One batch command: ``method?QUERY`` in the query-string form Bitrix24 expects, nested
    values the way PHP reads them (``FILTER[ID][0]=15``)."""
    return f"{method}?{urlencode(list(_pairs(params)))}"


def _pairs(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(key, text)`` pairs of a parameter tree: dicts and lists become ``key[sub]``."""
    if isinstance(value, dict | list | tuple):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, inner in items:
            yield from _pairs(inner, f"{prefix}[{key}]" if prefix else str(key))
    elif isinstance(value, bool):
        yield prefix, "Y" if value else "N"
    else:
        yield prefix, str(value)


def batch_params(calls: Sequence[Call]) -> dict[str, Any]:
    """The parameters of a ``batch`` running ``calls`` in order, keys ``c0``, ``c1``…"""
    return {"halt": 0, "cmd": {f"c{i}": command(m, p) for i, (m, p) in enumerate(calls)}}


def _as_dict(part: Any) -> dict[str, Any]:
    # empty parts of a batch answer come as JSON arrays, not objects
    return part if isinstance(part, dict) else {}


def batch_results(answer: Any, methods: Sequence[str]) -> list[Any]:
    """Each command's result, or the :class:`BitrixError` it ended with, from a batch answer
    to :func:`batch_params` (an exception object in the list, not raised)."""
    results = _as_dict(_as_dict(answer).get("result"))
    errors = _as_dict(_as_dict(answer).get("result_error"))
    out: list[Any] = []
    for i, method in enumerate(methods):
        key = f"c{i}"
        if key in errors:
            error = _as_dict(errors[key])
            # inner errors carry no HTTP status; they are the methods' own (400) refusals
            out.append(
                BitrixError(
                    str(error.get("error")), str(error.get("error_description", "")), 400, method
                )
            )
        elif key not in results:
            out.append(BitrixError(BAD_RESPONSE, "batch answer without this command", 200, method))
        elif results[key] is False:
            out.append(BitrixError(RESULT_FALSE, "result: false", 200, method))
        else:
            out.append(results[key])
    return out


class BatchQueue:
    """Gathers calls; sends them as batches of up to 50 whenever the bucket lets one through."""

    def __init__(self, limiter: AsyncLimiter, post: Post) -> None:
        self._limiter = limiter
        self._post = post
        self._queue: deque[list[Waiting]] = deque()
        self._queued = 0  # calls in _queue
        self._arrived = asyncio.Event()  # set by each submit, for the gathering flusher
        self._unanswered = 0  # calls sent and not answered yet
        self._last_at = -LONE_GAP_S  # when the latest call was queued (loop time)
        self._gap = LONE_GAP_S  # how long before the first call queued the one ahead of it was
        self._flusher: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.batches = 0  # batch requests sent, for reports

    def submit(self, method: str, params: dict[str, Any]) -> Waiting:
        """Queue one call; its ``future`` gives the result or raises its BitrixError."""
        return self.submit_group([(method, params)])[0]

    def submit_group(self, calls: Sequence[Call]) -> list[Waiting]:
        """Queue calls that must leave in one batch, in this order (at most 50)."""
        assert 0 < len(calls) <= MAX_BATCH
        group = [Waiting(method, params) for method, params in calls]
        if not self._queue:  # calls joining those queued keep their gap: same moment
            self._gap = group[0].queued_at - self._last_at
        self._last_at = group[0].queued_at
        self._queue.append(group)
        self._queued += len(group)
        self._arrived.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="bitrix24-batches")
        return group

    async def close(self) -> None:
        """Stop sending; whatever still waits is told so."""
        tasks = [t for t in (self._flusher, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for group in self._queue:
            for waiting in group:
                _settle(
                    waiting,
                    BitrixError(
                        NETWORK_ERROR, "the client was closed", None, waiting.method, sent=False
                    ),
                )
        self._queue.clear()
        self._queued = 0

    async def _flush(self) -> None:
        # started by the first call queued, this runs a turn of the loop later: calls made in
        # the same moment (a look and an online status, gathered) are queued by then
        while self._queue:
            if self._queued < MAX_BATCH and not self._at_once():
                await self._gather()
            await self._limiter.acquire()
            taken: list[Waiting] = []
            while self._queue and len(taken) + len(self._queue[0]) <= MAX_BATCH:
                taken += self._queue.popleft()
            self._queued -= len(taken)
            self._unanswered += len(taken)
            if not self._queue:
                # nothing else queued: this task sends it, and a call from now on starts another
                self._flusher = None
                me = asyncio.current_task()
                assert me is not None
                self._sending.add(me)
                me.add_done_callback(self._sending.discard)
                await self._send(taken)
                return
            task = asyncio.create_task(self._send(taken))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def lone(self) -> bool:
        """Whether a call made now would go at once, alone or lone: nothing else of ours
        queued or under way, or few and none just before it (a command alone, or commands one
        at a time)."""
        alone = not self._queued and not self._unanswered
        gap = asyncio.get_running_loop().time() - self._last_at
        return (alone and self._nearly_empty()) or self._lone(gap)

    def _nearly_empty(self) -> bool:
        # a command's next call comes one round trip after its last: with a portal a few
        # milliseconds away that is "just before"; alone, with the bucket nearly empty, it
        # still goes at once (a burst's first calls do too, a few at most)
        return self._limiter.has_capacity(self._limiter.max_rate - ALONE_REQUESTS)

    def _lone(self, gap: float) -> bool:
        return self._queued + self._unanswered <= LONE_CALLS and gap >= LONE_GAP_S

    def _at_once(self) -> bool:
        """Whether the calls queued go at once: while nothing of ours is in the bucket, or
        when they are alone or lone. Others gather, or a burst would spend the bucket's own
        burst on small batches while more calls come."""
        alone = self._queued == len(self._queue[0]) and not self._unanswered
        return (
            self._limiter.has_capacity(self._limiter.max_rate)
            or (alone and self._nearly_empty())
            or self._lone(self._gap)
        )

    async def _gather(self) -> None:
        """Wait until a batch is full, or no call has come for :data:`QUIET_S`; at most as
        long as the bucket takes to let one more request through."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self._limiter.time_period / self._limiter.max_rate
        while self._queued < MAX_BATCH:
            self._arrived.clear()
            wait = min(QUIET_S, until - loop.time())
            if wait <= 0:
                return
            try:
                await asyncio.wait_for(self._arrived.wait(), wait)
            except TimeoutError:
                return

    async def _send(self, group: list[Waiting]) -> None:
        try:
            await self._send_now(group)
        finally:
            self._unanswered -= len(group)

    async def _send_now(self, group: list[Waiting]) -> None:
        now = asyncio.get_running_loop().time()
        for waiting in group:
            waiting.sent_at = now
        if len(group) == 1:
            only = group[0]
            try:
                _settle(only, await self._post(only.method, only.params))
            except BitrixError as err:
                only.request_error = err
                _settle(only, err)
            return
        self.batches += 1
        try:
            answer = await self._post(BATCH, batch_params([(w.method, w.params) for w in group]))
        except BitrixError as err:
            for waiting in group:  # the whole request failed: each call failed the same way
                waiting.request_error = err.for_method(waiting.method)
                _settle(waiting, waiting.request_error)
            return
        for waiting, result in zip(
            group, batch_results(answer, [w.method for w in group]), strict=True
        ):
            _settle(waiting, result)


async def answered(group: list[Waiting]) -> list[Any]:
    """Each call's result or its :class:`BitrixError`, once the group is answered.

    A group's calls are settled together, in order, in one step (by the request that carried
    them, or by :meth:`BatchQueue.close`), so waiting for the last one waits for all: one turn
    of the loop, where gathering every future took two."""
    try:
        await group[-1].future
    except asyncio.CancelledError:
        for waiting in group:  # no one is left to read them: unanswered, or read here
            if not waiting.future.cancel() and not waiting.future.cancelled():
                waiting.future.exception()
        raise
    except BitrixError:
        pass  # read below, with the others
    return [w.future.exception() or w.future.result() for w in group]


def _settle(waiting: Waiting, result: Any) -> None:
    # a caller that gave up (cancelled) has no one left to tell
    if waiting.future.done():
        return
    if isinstance(result, BitrixError):
        waiting.future.set_exception(result)
    else:
        waiting.future.set_result(result)
