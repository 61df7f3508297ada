"""Whether the bot can do its job right now, and since when: what ``GET /healthz`` says.

Only the state and when it began are public; the reason goes to the log (and the error
counters to ``/metrics``), so an unauthenticated probe learns nothing about the portal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bot.bitrix24.codes import ANY_METHOD, OURS, known_code

log = logging.getLogger(__name__)

Status = Literal["ok", "degraded"]

# answers about one request, from a portal that works: a bad dialog number, no rights on a
# line, the bucket briefly full
_REQUEST_LEVEL = frozenset({"QUERY_LIMIT_EXCEEDED", "RESULT_FALSE"})


def portal_failing(code: str, status: int | None) -> bool:
    """Whether an error means Bitrix24 as a whole fails the bot (network, auth, 5xx, moved),
    rather than refusing one request about one dialog."""
    if code in _REQUEST_LEVEL:
        return False
    entry = known_code(code, status)
    return entry is None or entry.method in (ANY_METHOD, OURS) or code == "IM_NOT_INSTALLED"


@dataclass(frozen=True, slots=True)
class Report:
    """The health as ``/healthz`` shows it."""

    status: Status
    since: float  # time.time() when this status began


class Health:
    """Follows the Bitrix24 calls' outcomes: degraded from the first portal-wide failure
    until the next call that gets through."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._report = Report("ok", clock())

    def report(self) -> Report:
        """The current status and since when."""
        return self._report

    def succeeded(self) -> None:
        """A call got an answer from a working portal."""
        if self._report.status != "ok":
            log.info("health: ok again (Bitrix24 answers)")
            self._report = Report("ok", self._clock())

    def failed(self, code: str, status: int | None, method: str) -> None:
        """A call failed; only portal-wide failures degrade the health."""
        if code == "insufficient_scope" and not method.startswith("imopenlines."):
            return  # an optional extra (online marks need the user scope), not the bot's job
        if not portal_failing(code, status):
            self.succeeded()
            return
        if self._report.status != "degraded":
            log.warning("health: degraded: %s failed with %s", method, code)
            self._report = Report("degraded", self._clock())
