"""The one error type every Bitrix24 call raises, and how to treat each kind."""

from __future__ import annotations

from enum import Enum

from bot.bitrix24.codes import (
    BAD_RESPONSE,
    NETWORK_ERROR,
    NOT_EXECUTED,
    OUTCOME_UNKNOWN,
    PORTAL_MOVED,
    TIMEOUT,
)
from bot.config import mask_webhook


class Retry(Enum):
    """What a failed attempt allows."""

    SAFE = "safe"  # surely not executed: repeat as is
    UNKNOWN = "unknown"  # may have run: repeat reads; look before repeating writes
    NEVER = "never"  # a final answer


class BitrixError(Exception):
    """A failed Bitrix24 call: ``code`` (Bitrix24's or ours), ``description``, HTTP ``status``."""

    def __init__(
        self,
        code: str,
        description: str = "",
        status: int | None = None,
        method: str = "",
        *,
        sent: bool = True,
        location: str | None = None,
    ) -> None:
        self.code = code
        self.description = mask_webhook(description)[:300]
        self.status = status
        self.method = method
        self.sent = sent  # False when the request surely never reached the portal
        # where a moved portal points to (PORTAL_MOVED), its webhook code masked
        self.location = mask_webhook(location) if location else None
        super().__init__(str(self))

    def for_method(self, method: str) -> BitrixError:
        """The same failure, as met by a call of ``method`` (one call of a failed batch)."""
        return BitrixError(
            self.code,
            self.description,
            self.status,
            method,
            sent=self.sent,
            location=self.location,
        )

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        text = f": {self.description}" if self.description else ""
        return f"{self.method or 'bitrix24'}: {self.code}{status}{text}"

    def __repr__(self) -> str:
        return f"BitrixError(code={self.code!r}, status={self.status!r}, method={self.method!r})"

    @property
    def retry(self) -> Retry:
        """Whether repeating the same request is safe, unknown, or pointless."""
        if self.code == PORTAL_MOVED:
            return Retry.NEVER  # not run, but the old address will only say the same again
        if self.code in NOT_EXECUTED or not self.sent:
            return Retry.SAFE
        if self.status == 503 and self.code != "OVERLOAD_LIMIT":
            return Retry.SAFE  # a 503 answer means the portal did not take the request
        if self.code in (TIMEOUT, NETWORK_ERROR, OUTCOME_UNKNOWN):
            return Retry.UNKNOWN
        if self.status in (502, 504) or self.code in (
            "INTERNAL_SERVER_ERROR",
            "ERROR_UNEXPECTED_ANSWER",
        ):
            return Retry.UNKNOWN
        if self.code == BAD_RESPONSE and (
            self.status is None or self.status >= 500 or self.status == 200
        ):
            return Retry.UNKNOWN
        return Retry.NEVER
