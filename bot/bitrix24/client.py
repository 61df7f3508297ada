"""The Bitrix24 REST client: one aiohttp session, a leaky bucket, safe retries, typed errors.

Retries follow one rule: repeat only what surely did not run (``QUERY_LIMIT_EXCEEDED``, 503,
refused connections). A transfer whose outcome is unknown (timeout, 502/504, a dropped
connection) is never repeated blindly: the dialog is looked at first, so a slow success is
reported as a success instead of becoming a second transfer or a false error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter

from bot.bitrix24.auth import Auth, OAuthAuth, WebhookAuth
from bot.bitrix24.batching import BatchQueue
from bot.bitrix24.codes import (
    BAD_RESPONSE,
    DIALOG_GET,
    DNS_ERROR,
    FINISH,
    NETWORK_ERROR,
    NOT_CONFIGURED,
    OUTCOME_UNKNOWN,
    RESULT_FALSE,
    TIMEOUT,
    TLS_ERROR,
    TRANSFER,
)
from bot.bitrix24.errors import BitrixError, Retry
from bot.command import DialogKind, DialogRef
from bot.config import Bitrix24Settings, mask_webhook
from bot.directory import Kind, Target

log = logging.getLogger(__name__)

# methods that change something: never repeated when they may have run
WRITES = frozenset({TRANSFER, FINISH, "batch"})
_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 4.0
_MIN_ATTEMPT_S = 0.5  # not worth starting an attempt with less time than this left


@dataclass(frozen=True, slots=True)
class LastCall:
    """The latest request to Bitrix24 and how it ended (for health checks)."""

    at: float  # time.time()
    method: str
    outcome: str  # "ok" or the error code


@dataclass(frozen=True, slots=True)
class Dialog:
    """An open-line dialog as ``imopenlines.dialog.get`` describes it."""

    chat_id: int
    name: str
    owner_id: int  # 0: nobody holds it (waiting in a queue)
    line_id: int | None
    channel: str | None

    def held_by(self, target: Target) -> bool:
        """True when the dialog already sits with ``target``: with that operator, or waiting
        unassigned in that queue (an operator of the line holding it does not count)."""
        if target.kind is Kind.OPERATOR:
            return self.owner_id == target.bitrix_id
        return self.line_id == target.bitrix_id and self.owner_id == 0

    def moved_to(self, target: Target, before: Dialog | None) -> bool:
        """Whether a transfer to ``target`` shows, compared with the dialog ``before`` it.

        A queue hands its dialogs out at once, so "in the line and no longer with the
        previous holder" counts as landed.
        """
        if target.kind is Kind.OPERATOR or before is None:
            return self.held_by(target)
        return self.line_id == target.bitrix_id and (
            self.owner_id != before.owner_id or before.line_id != target.bitrix_id
        )


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_dialog(result: Any) -> Dialog:
    """A :class:`Dialog` from a ``dialog.get`` result; ``BAD_RESPONSE`` if it is not one."""
    if not isinstance(result, dict) or _as_int(result.get("id")) <= 0:
        raise BitrixError(BAD_RESPONSE, "dialog.get returned no dialog", 200, DIALOG_GET)
    entity = str(result.get("entity_id") or "").split("|")
    line = _as_int(entity[1]) if len(entity) > 1 else 0
    return Dialog(
        chat_id=_as_int(result["id"]),
        name=str(result.get("name") or ""),
        owner_id=_as_int(result.get("owner")),
        line_id=line or None,
        channel=entity[0] or None,
    )


class BitrixClient:
    """Calls Bitrix24 REST methods through an inbound webhook."""

    def __init__(
        self, settings: Bitrix24Settings, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._settings = settings
        self._auth: Auth | None = None
        if settings.webhook_url is not None:
            self._auth = WebhookAuth(settings.webhook_url.get_secret_value())
        elif settings.oauth is not None:
            self._auth = OAuthAuth(settings.oauth, self._http)
        self._session = session
        self._own_session = session is None
        self.last_call: LastCall | None = None
        # Bitrix24's own bucket (capacity X, drains Y/s), mirrored with a tenth of X kept in
        # reserve: requests reach the portal a little later than they leave the bucket, so
        # they can arrive bunched, and other apps calling from our address share the bucket
        capacity = max(1, int(settings.burst * 0.9))
        self._limiter = AsyncLimiter(capacity, capacity / settings.rate_per_s)
        self.batches: BatchQueue | None = None
        if settings.batch_calls:
            self.batches = BatchQueue(
                self._limiter, lambda method, params: self._post(method, params, settings.timeout_s)
            )

    def __repr__(self) -> str:
        return f"BitrixClient({self._auth.masked() if self._auth else 'not configured'})"

    async def close(self) -> None:
        """Close the HTTP session (if the client made it)."""
        if self.batches is not None:
            await self.batches.close()
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> BitrixClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                json_serialize=json.dumps, headers={"Accept": "application/json"}
            )
        return self._session

    # ---- the generic call -------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call ``method``; returns ``result`` or raises :class:`BitrixError`.

        Reads are repeated on any transient failure; writes only when they surely did not run
        (:meth:`transfer` also looks at the dialog before it repeats).
        """
        deadline = asyncio.get_running_loop().time() + self._settings.deadline_s
        return await self._call_until(
            deadline, method, params or {}, repeat_unknown=method not in WRITES
        )

    async def _call_until(
        self, deadline: float, method: str, params: dict[str, Any], *, repeat_unknown: bool
    ) -> Any:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            left = deadline - loop.time()
            if left < _MIN_ATTEMPT_S / 5:
                raise BitrixError(TIMEOUT, "no time left for another try", None, method, sent=False)
            try:
                return await self._attempt(method, params, min(self._settings.timeout_s, left))
            except BitrixError as err:
                retry = err.retry
                if retry is Retry.NEVER or (retry is Retry.UNKNOWN and not repeat_unknown):
                    raise
                delay = min(_MAX_BACKOFF_S, _FIRST_BACKOFF_S * 2**attempt)
                delay *= 0.75 + random.random() / 2  # spread retries from concurrent commands
                if loop.time() + delay + _MIN_ATTEMPT_S > deadline:
                    raise
                log.info("bitrix24 %s: %s, retrying in %.1fs", method, err.code, delay)
                await asyncio.sleep(delay)
                attempt += 1

    async def _attempt(self, method: str, params: dict[str, Any], limit_s: float) -> Any:
        if self._auth is None:
            raise BitrixError(
                NOT_CONFIGURED, "bitrix24.webhook_url is not set", None, method, sent=False
            )
        if self.batches is not None:
            return await self.batches.submit(method, params)
        await self._limiter.acquire()
        return await self._post(method, params, limit_s)

    async def _post(self, method: str, params: dict[str, Any], limit_s: float) -> Any:
        """One HTTP request, its answer parsed; the bucket was already asked. An expired OAuth
        token is refreshed and the request made once more."""
        assert self._auth is not None
        try:
            url, extra = self._auth.endpoint(method)
            try:
                result = await self._request(url, method, {**params, **extra}, limit_s)
            except BitrixError as err:
                if err.code != "expired_token" or not await self._auth.renew(extra):
                    raise
                url, extra = self._auth.endpoint(method)
                result = await self._request(url, method, {**params, **extra}, limit_s)
        except BitrixError as err:
            self.last_call = LastCall(time.time(), method, err.code)
            raise
        self.last_call = LastCall(time.time(), method, "ok")
        return result

    async def _request(self, url: str, method: str, payload: dict[str, Any], limit_s: float) -> Any:
        started = time.monotonic()
        status: int | None = None
        try:
            client_timeout = aiohttp.ClientTimeout(total=limit_s, sock_connect=min(limit_s, 5.0))
            async with self._http().post(url, json=payload, timeout=client_timeout) as response:
                status = response.status
                body = await response.read()
        except aiohttp.ClientConnectorDNSError:
            raise BitrixError(
                DNS_ERROR, "host name does not resolve", None, method, sent=False
            ) from None
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError):
            raise BitrixError(TLS_ERROR, "TLS handshake failed", None, method, sent=False) from None
        except aiohttp.ConnectionTimeoutError:
            raise BitrixError(
                TIMEOUT, "could not connect in time", None, method, sent=False
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise BitrixError(
                NETWORK_ERROR,
                f"cannot connect: {exc.os_error.strerror or ''}",
                None,
                method,
                sent=False,
            ) from None
        except TimeoutError:
            raise BitrixError(TIMEOUT, f"no answer in {limit_s:.1f}s", status, method) from None
        except (aiohttp.ClientError, OSError) as exc:
            # the request may have reached the portal: the outcome is unknown
            raise BitrixError(
                NETWORK_ERROR, f"connection lost: {type(exc).__name__}", status, method
            ) from None
        finally:
            log.debug(
                "bitrix24 %s -> %s in %.0f ms", method, status, (time.monotonic() - started) * 1000
            )
        return self._result(method, status, body)

    @staticmethod
    def _result(method: str, status: int, body: bytes) -> Any:
        try:
            data = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and "error" in data:
            raise BitrixError(
                str(data.get("error")), str(data.get("error_description") or ""), status, method
            )
        if not isinstance(data, dict) or "result" not in data or status >= 300:
            kind = "empty body" if not body else "not Bitrix24 JSON"
            raise BitrixError(BAD_RESPONSE, f"{kind} (HTTP {status})", status, method)
        if data["result"] is False:
            raise BitrixError(RESULT_FALSE, "the portal answered result: false", status, method)
        return data["result"]

    # ---- the methods the bot uses -------------------------------------------------------

    async def dialog(self, ref: DialogRef | int) -> Dialog:
        """Look a dialog up by CHAT_ID or session number: name, holder, line, channel."""
        if isinstance(ref, int):
            params = {"CHAT_ID": ref}
        elif ref.kind is DialogKind.SESSION:
            params = {"SESSION_ID": ref.number}
        else:
            params = {"CHAT_ID": ref.number}
        return parse_dialog(await self.call(DIALOG_GET, params))

    def transfer_params(self, chat_id: int, target: Target) -> dict[str, Any]:
        """``CHAT_ID`` plus exactly one target parameter (``TRANSFER_ID`` on legacy portals)."""
        if self._settings.legacy_transfer_id:
            value = (
                str(target.bitrix_id)
                if target.kind is Kind.OPERATOR
                else f"queue{target.bitrix_id}"
            )
            return {"CHAT_ID": chat_id, "TRANSFER_ID": value}
        key = "USER_ID" if target.kind is Kind.OPERATOR else "QUEUE_ID"
        return {"CHAT_ID": chat_id, key: target.bitrix_id}

    async def transfer(self, chat_id: int, target: Target, before: Dialog | None = None) -> None:
        """Move a dialog to ``target``; raises :class:`BitrixError` unless it surely moved.

        ``before``, the dialog as last seen, lets an unknown outcome be judged precisely.
        """
        deadline = asyncio.get_running_loop().time() + self._settings.deadline_s
        params = self.transfer_params(chat_id, target)
        uncertain: BitrixError | None = None
        while True:
            try:
                await self._call_until(deadline, TRANSFER, params, repeat_unknown=False)
                return
            except BitrixError as err:
                # after an unknown outcome, a refusal may just mean the first try landed
                if err.retry is not Retry.UNKNOWN and not (
                    uncertain and err.code == "OPERATOR_WRONG"
                ):
                    raise
                uncertain = uncertain or err
            log.warning(
                "bitrix24 transfer of %s: outcome unknown (%s), looking", chat_id, uncertain.code
            )
            if await self._landed(deadline, chat_id, target, before, uncertain):
                log.info("bitrix24 transfer of %s had landed after all", chat_id)
                return
            if deadline - asyncio.get_running_loop().time() < _MIN_ATTEMPT_S:
                raise BitrixError(TIMEOUT, uncertain.description, uncertain.status, TRANSFER)

    async def _landed(
        self,
        deadline: float,
        chat_id: int,
        target: Target,
        before: Dialog | None,
        cause: BitrixError,
    ) -> bool:
        try:
            result = await self._call_until(
                deadline, DIALOG_GET, {"CHAT_ID": chat_id}, repeat_unknown=True
            )
        except BitrixError:
            raise BitrixError(
                OUTCOME_UNKNOWN,
                f"{cause.code}, and the dialog could not be checked",
                cause.status,
                TRANSFER,
            ) from None
        return parse_dialog(result).moved_to(target, before)

    async def finish(self, chat_id: int) -> None:
        """Finish a dialog someone else holds (``imopenlines.operator.another.finish``)."""
        deadline = asyncio.get_running_loop().time() + self._settings.deadline_s
        try:
            await self._call_until(deadline, FINISH, {"CHAT_ID": chat_id}, repeat_unknown=False)
        except BitrixError as err:
            if err.retry is Retry.UNKNOWN:
                # dialog.get does not show whether a dialog was finished: say we don't know
                raise BitrixError(OUTCOME_UNKNOWN, err.code, err.status, FINISH) from None
            raise


__all__ = ["BitrixClient", "BitrixError", "Dialog", "mask_webhook", "parse_dialog"]
