"""Who is online: Bitrix24's ``IS_ONLINE`` for the operators a keyboard shows, kept a minute.

The marks help a supervisor pick someone who will answer; they never stop a command. Without
the webhook's ``user`` scope, or when the portal answers late or not at all, operators are
shown unmarked and everything else goes on as before. The lookup is one ``user.get`` call
through the bot's own :class:`BitrixClient`, so it waits in the same rate bucket as the
transfers and, made together with a look at the dialogs, travels in the same ``batch``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bot.bitrix24.client import BitrixClient
from bot.bitrix24.errors import BitrixError
from bot.directory import Kind, Target

log = logging.getLogger(__name__)

USER_GET = "user.get"
MAX_IDS = 50  # user.get answers 50 records a call: one call, never a paged walk
FRESH_S = 60.0  # how long a status is good for
WAIT_S = 2.0  # a command waits at most this long for the marks, then goes on without them
# after a refusal for want of the scope, ask again this much later (someone may add it)
NO_SCOPE_S = 600.0
NO_SCOPE = "insufficient_scope"

Online = Mapping[int, bool]  # Bitrix24 user ID -> online; an ID left out is not known


class Presence:
    """Online or offline, by Bitrix24 user ID, from ``user.get``; each status kept
    :data:`FRESH_S` seconds. One instance serves the bot for its whole run."""

    def __init__(
        self,
        client: BitrixClient,
        *,
        fresh_s: float = FRESH_S,
        wait_s: float = WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._fresh_s = fresh_s
        self._wait_s = wait_s
        self._clock = clock
        self._seen: dict[int, tuple[float, bool | None]] = {}  # ID -> (when, online or unknown)
        self._quiet_until = -math.inf  # after a failure: no call before then
        self._told: set[str] = set()  # failures logged once already
        self._asking = asyncio.Lock()  # one call at a time: the next one finds its answer

    async def of(self, targets: Iterable[Target]) -> dict[int, bool]:
        """Whether each operator among ``targets`` is online, for those whose status is
        known; asks the portal, in one call, about those not seen within the last minute.

        Never raises for the portal's sake and never waits more than a couple of seconds.
        """
        known = self.all_known(targets)
        if known is not None:  # all seen within the minute: no call, nothing to wait for
            return known
        ids = _operator_ids(targets)
        try:
            async with asyncio.timeout(self._wait_s):
                async with self._asking:
                    await self._ask(ids)
        except TimeoutError:
            self._failed("TIMEOUT", None, self._fresh_s)
        return self.known(ids)

    def all_known(self, targets: Iterable[Target]) -> dict[int, bool] | None:
        """What :meth:`of` would answer without a call, when every operator among ``targets``
        was seen within the minute; else None."""
        ids = _operator_ids(targets)
        known = self.known(ids)
        return known if len(known) == len(ids) else None

    def known(self, ids: Iterable[int]) -> dict[int, bool]:
        """The fresh statuses among ``ids`` (no call)."""
        oldest = self._clock() - self._fresh_s
        out: dict[int, bool] = {}
        for user_id in ids:
            seen = self._seen.get(user_id)
            if seen is not None and seen[0] >= oldest and seen[1] is not None:
                out[user_id] = seen[1]
        return out

    async def _ask(self, ids: list[int]) -> None:
        now = self._clock()
        if now < self._quiet_until:
            return
        oldest = now - self._fresh_s
        wanted = [i for i in ids if self._seen.get(i, (-math.inf, None))[0] < oldest][:MAX_IDS]
        if not wanted:
            return
        try:
            answer = await self._client.call(USER_GET, {"FILTER": {"ID": wanted}})
        except BitrixError as err:
            self._failed(err.code, err.status, NO_SCOPE_S if err.code == NO_SCOPE else None)
            return
        found = _statuses(answer)
        if found is None:
            self._failed("BAD_RESPONSE", None, None)
            return
        now = self._clock()
        for user_id in wanted:  # one the portal does not list stays unmarked, and is not asked
            self._seen[user_id] = (now, found.get(user_id))  # about again for a minute
        self._told.clear()  # working again: a new failure is worth a line

    def _failed(self, code: str, status: int | None, quiet_s: float | None) -> None:
        """Go without marks for a while; say why once (codes and statuses only, no URLs)."""
        self._quiet_until = self._clock() + (self._fresh_s if quiet_s is None else quiet_s)
        if code in self._told:
            log.debug("online marks skipped: user.get %s", code)
            return
        self._told.add(code)
        if code == NO_SCOPE:
            log.warning(
                "online marks are off: the webhook lacks the 'user' scope (user.get: %s); "
                "operators are shown without them",
                code,
            )
        else:
            shown = f" (HTTP {status})" if status is not None else ""
            log.info("online marks skipped for now: user.get %s%s", code, shown)


def _statuses(answer: Any) -> dict[int, bool] | None:
    """``IS_ONLINE`` by user ID from a ``user.get`` result (IDs come as strings); None when
    the answer is no list of users."""
    if not isinstance(answer, list):
        return None
    found: dict[int, bool] = {}
    for user in answer:
        if not isinstance(user, dict):
            continue
        try:
            user_id = int(str(user.get("ID")))
        except ValueError:
            continue
        online = user.get("IS_ONLINE")
        if online in ("Y", "N"):
            found[user_id] = online == "Y"
    return found


def _operator_ids(targets: Iterable[Target]) -> list[int]:
    return list(dict.fromkeys(t.bitrix_id for t in targets if t.kind is Kind.OPERATOR))
