"""Calls made together go out together, as one ``batch`` request.

Bitrix24 counts a ``batch`` of up to 50 commands as one request for its leaky bucket, and
each command still gets its own result or error. Calls made in the same moment, and calls
that wait for the bucket, leave together as soon as it lets one request through: a burst of
transfers finishes in a fraction of the time the bucket would allow one call at a time. A
call on its own goes out on its own, as a plain request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiolimiter import AsyncLimiter

from bot.bitrix24.codes import BAD_RESPONSE, RESULT_FALSE
from bot.bitrix24.errors import BitrixError

log = logging.getLogger(__name__)

MAX_BATCH = 50  # Bitrix24 refuses more commands in one batch
BATCH = "batch"

Post = Callable[[str, dict[str, Any]], Awaitable[Any]]


@dataclass
class _Waiting:
    method: str
    params: dict[str, Any]
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def command(method: str, params: dict[str, Any]) -> str:
    """One batch command: ``method?QUERY`` in the query-string form Bitrix24 expects."""
    return f"{method}?{urlencode(params)}"


def _as_dict(part: Any) -> dict[str, Any]:
    # empty parts of a batch answer come as JSON arrays, not objects
    return part if isinstance(part, dict) else {}


class BatchQueue:
    """Gathers calls; sends them as batches of up to 50 whenever the bucket lets one through."""

    def __init__(self, limiter: AsyncLimiter, post: Post) -> None:
        self._limiter = limiter
        self._post = post
        self._queue: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.batches = 0  # batch requests sent, for reports

    def submit(self, method: str, params: dict[str, Any]) -> Awaitable[Any]:
        """Queue one call; the awaitable gives its result or raises its BitrixError."""
        waiting = _Waiting(method, params)
        self._queue.append(waiting)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="bitrix24-batches")
        return waiting.future

    async def close(self) -> None:
        """Stop sending; whatever still waits is told so."""
        tasks = [t for t in (self._flusher, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for waiting in self._queue:
            if not waiting.future.done():
                waiting.future.set_exception(
                    BitrixError(
                        "NETWORK_ERROR", "the client was closed", None, waiting.method, sent=False
                    )
                )
        self._queue.clear()

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # one turn of the loop: calls made in the same moment join in
        while self._queue:
            await self._limiter.acquire()
            group, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            task = asyncio.create_task(self._send(group))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, group: list[_Waiting]) -> None:
        if len(group) == 1:
            only = group[0]
            try:
                only.future.set_result(await self._post(only.method, only.params))
            except BitrixError as err:
                only.future.set_exception(err)
            return
        cmd = {f"c{i}": command(w.method, w.params) for i, w in enumerate(group)}
        self.batches += 1
        try:
            answer = await self._post(BATCH, {"halt": 0, "cmd": cmd})
        except BitrixError as err:
            for waiting in group:  # the whole request failed: each call failed the same way
                waiting.future.set_exception(
                    BitrixError(
                        err.code, err.description, err.status, waiting.method, sent=err.sent
                    )
                )
            return
        results = _as_dict(_as_dict(answer).get("result"))
        errors = _as_dict(_as_dict(answer).get("result_error"))
        for i, waiting in enumerate(group):
            key = f"c{i}"
            if key in errors:
                error = _as_dict(errors[key])
                # inner errors carry no HTTP status; they are the methods' own (400) refusals
                waiting.future.set_exception(
                    BitrixError(
                        str(error.get("error")),
                        str(error.get("error_description", "")),
                        400,
                        waiting.method,
                    )
                )
            elif key not in results:
                waiting.future.set_exception(
                    BitrixError(
                        BAD_RESPONSE, "batch answer without this command", 200, waiting.method
                    )
                )
            elif results[key] is False:
                waiting.future.set_exception(
                    BitrixError(RESULT_FALSE, "result: false", 200, waiting.method)
                )
            else:
                waiting.future.set_result(results[key])
