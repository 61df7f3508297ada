"""The Bitrix24 REST client: one aiohttp session, a leaky bucket, safe retries, typed errors.

Retries follow one rule: repeat only what surely did not run (``QUERY_LIMIT_EXCEEDED``, a 503
page, a refused connection). A write (transfer, finish) is sent at most once per call of
:meth:`BitrixClient.transfer` / :meth:`BitrixClient.finish`: it travels in one ``batch`` with
a look at the dialog, so the answer says what the portal really did, and after an unknown
outcome (timeout, 5xx, a dropped connection) the dialog is looked at instead of sending the
write again. Redirects are never followed: a moved portal is an error of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter

from bot.bitrix24.auth import Auth, OAuthAuth, WebhookAuth
from bot.bitrix24.batching import BATCH, BatchQueue, Call, answered, batch_params, batch_results
from bot.bitrix24.codes import (
    BAD_RESPONSE,
    DIALOG_GET,
    DNS_ERROR,
    FINISH,
    NETWORK_ERROR,
    NOT_CONFIGURED,
    OUTCOME_UNKNOWN,
    PORTAL_MOVED,
    RESULT_FALSE,
    TIMEOUT,
    TLS_ERROR,
    TRANSFER,
)
from bot.bitrix24.errors import BitrixError, Retry
from bot.command import DialogKind, DialogRef
from bot.config import Bitrix24Settings, mask_webhook
from bot.directory import Kind, Target
from bot.health import Health
from bot.metrics import Metrics

log = logging.getLogger(__name__)

# methods that change something: never repeated when they may have run
WRITES = frozenset({TRANSFER, FINISH, BATCH})
_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 4.0
_MIN_ATTEMPT_S = 0.5  # not worth starting an attempt with less time than this left
# after a write whose outcome is unknown, give the portal this long to finish it before looking
SETTLE_S = 1.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class Dialog:
    """An open-line dialog as ``imopenlines.dialog.get`` describes it."""

    chat_id: int
    name: str
    owner_id: int  # 0: nobody holds it (waiting in a queue)
    line_id: int | None  # the line it is in now
    channel: str | None
    session_id: int | None = None  # the open session; 0 once finished; None: not reported

    @property
    def finished(self) -> bool:
        """Whether the dialog has no open session (it was finished)."""
        return self.session_id == 0

    def held_by(self, target: Target) -> bool:
        """True when the dialog already sits with ``target``: with that operator, or waiting
        unassigned in that queue (an operator of the line holding it does not count)."""
        if target.kind is Kind.OPERATOR:
            return self.owner_id == target.bitrix_id
        return self.line_id == target.bitrix_id and self.owner_id == 0

    def shows_move(self, target: Target, before: Dialog) -> bool:
        """Whether this dialog, seen after a transfer to ``target``, shows the move.

        An operator must hold it. A queue must have it in its line, and either waiting there
        or handed out already: to someone new, or after it came from another line.
        """
        if target.kind is Kind.OPERATOR:
            return self.owner_id == target.bitrix_id
        return self.line_id == target.bitrix_id and (
            self.owner_id == 0
            or self.owner_id != before.owner_id
            or before.line_id != target.bitrix_id
        )


@dataclass(frozen=True, slots=True)
class Seen:
    """What a write left behind: the dialog right after it, and, when the write's own answer
    was lost or unclear, why (then ``after`` was looked at separately, a little later)."""

    after: Dialog
    unclear: BitrixError | None = None


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_dialog(result: Any) -> Dialog:
    """A :class:`Dialog` from a ``dialog.get`` result; ``BAD_RESPONSE`` if it is not one.

    ``entity_id`` keeps the line the chat was created in; the line it is in now, and its open
    session, are fields 7 and 5 of ``entity_data_1`` (when the portal reports them).
    """
    if not isinstance(result, dict) or _as_int(result.get("id")) <= 0:
        raise BitrixError(BAD_RESPONSE, "dialog.get returned no dialog", 200, DIALOG_GET)
    entity = str(result.get("entity_id") or "").split("|")
    data = str(result.get("entity_data_1") or "").split("|")
    line = _as_int(data[7]) if len(data) > 7 else 0
    if line <= 0:
        line = _as_int(entity[1]) if len(entity) > 1 else 0
    return Dialog(
        chat_id=_as_int(result["id"]),
        name=str(result.get("name") or ""),
        owner_id=_as_int(result.get("owner")),
        line_id=line if line > 0 else None,
        channel=entity[0] or None,
        session_id=max(0, _as_int(data[5])) if len(data) > 5 and data[5].strip() else None,
    )


class _Deadline:
    """When a call must be over; time spent waiting for the rate bucket does not count."""

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._at = self._loop.time() + seconds

    def left(self) -> float:
        return self._at - self._loop.time()

    def extend(self, seconds: float) -> None:
        self._at += max(0.0, seconds)


class BitrixClient:
    """Calls Bitrix24 REST methods through an inbound webhook."""

    def __init__(
        self,
        settings: Bitrix24Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._auth: Auth | None = None
        if settings.webhook_url is not None:
            self._auth = WebhookAuth(settings.webhook_url.get_secret_value())
        elif settings.oauth is not None:
            self._auth = OAuthAuth(settings.oauth, self._http)
        self._session = session
        self._own_session = session is None
        self.health = Health()
        self.metrics = metrics or Metrics()
        # Bitrix24's own bucket (capacity X, drains Y/s), mirrored with a twentieth of X (at
        # least one request) kept in reserve: requests reach the portal a little later than
        # they leave the bucket, so they can arrive bunched. No more than that: each request
        # kept back costs a burst 1/Y seconds (a tenth made 2,000 commands 3 s slower)
        capacity = max(1, settings.burst - max(1, settings.burst // 20))
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

    @property
    def lone(self) -> bool:
        """Whether a call made now would leave at once rather than wait to share a batch or
        for the bucket: nothing else of ours under way and the bucket nearly empty, or few
        others under way and none just before it."""
        if self.batches is not None:
            return self.batches.lone()
        return self._limiter.has_capacity()

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

        Reads are repeated on any transient failure; writes only when they surely did not run.
        """
        deadline = _Deadline(self._settings.deadline_s)
        results = await self._call_until(
            deadline, [(method, params or {})], repeat_unknown=method not in WRITES
        )
        return results[0]

    async def batch(self, calls: Mapping[str, Call]) -> dict[str, Any]:
        """Run read-only ``calls`` (name -> method and params) in one request, in order.

        Each name maps to its result, or to the :class:`BitrixError` that call ended with;
        a failure of the request itself is raised.
        """
        names = list(calls)
        deadline = _Deadline(self._settings.deadline_s)
        results = await self._call_until(
            deadline, [calls[name] for name in names], repeat_unknown=True
        )
        return dict(zip(names, results, strict=True))

    async def _call_until(
        self, deadline: _Deadline, calls: Sequence[Call], *, repeat_unknown: bool
    ) -> list[Any]:
        """Send ``calls`` in one request, repeated while that is safe and time is left."""
        attempt = 0
        last: BitrixError | None = None
        while True:
            if deadline.left() < _MIN_ATTEMPT_S / 5:
                if last is not None:
                    raise last
                raise BitrixError(
                    TIMEOUT, "no time left for another try", None, calls[0][0], sent=False
                )
            try:
                results = await self._send_once(calls, deadline)
                if len(calls) == 1 and isinstance(results[0], BitrixError):
                    raise results[0]
                return results
            except BitrixError as err:
                last = err
                retry = err.retry
                if retry is Retry.NEVER or (retry is Retry.UNKNOWN and not repeat_unknown):
                    raise
                delay = min(_MAX_BACKOFF_S, _FIRST_BACKOFF_S * 2**attempt)
                delay *= 0.75 + random.random() / 2  # spread retries from concurrent commands
                if deadline.left() < delay + _MIN_ATTEMPT_S:
                    raise
                log.info("bitrix24 %s: %s, retrying in %.1fs", err.method, err.code, delay)
                await asyncio.sleep(delay)
                attempt += 1

    async def _send_once(self, calls: Sequence[Call], deadline: _Deadline) -> list[Any]:
        """One request carrying ``calls`` (a plain call, or a batch): each call's result or
        error. Raises :class:`BitrixError` when the request itself failed."""
        method = calls[0][0]
        if self._auth is None:
            raise BitrixError(
                NOT_CONFIGURED, "bitrix24.webhook_url is not set", None, method, sent=False
            )
        if self.batches is not None:
            group = self.batches.submit_group(calls)
            results = await answered(group)
            deadline.extend(group[0].queued_s)
            self.metrics.bucket_wait_seconds.observe(group[0].queued_s)
            if group[0].request_error is not None:
                raise group[0].request_error
            return list(results)
        loop = asyncio.get_running_loop()
        queued = loop.time()
        await self._limiter.acquire()
        deadline.extend(loop.time() - queued)
        self.metrics.bucket_wait_seconds.observe(loop.time() - queued)
        limit_s = min(self._settings.timeout_s, max(deadline.left(), _MIN_ATTEMPT_S / 5))
        if len(calls) == 1:
            return [await self._post(method, calls[0][1], limit_s)]
        answer = await self._post(BATCH, batch_params(calls), limit_s)
        return batch_results(answer, [m for m, _ in calls])

    async def _post(self, method: str, params: dict[str, Any], limit_s: float) -> Any:
        """One HTTP request, its answer parsed; the bucket was already asked. An expired OAuth
        token is refreshed and the request made once more."""
        assert self._auth is not None
        started = time.monotonic()
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
            self.health.failed(err.code, err.status, method)
            self.metrics.bitrix24_errors.labels(method, err.code).inc()
            raise
        finally:
            seconds = time.monotonic() - started
            self.metrics.bitrix24_request_seconds.labels(method).observe(seconds)
        self.health.succeeded()
        return result

    async def _request(self, url: str, method: str, payload: dict[str, Any], limit_s: float) -> Any:
        started = time.monotonic()
        status: int | None = None
        try:
            client_timeout = aiohttp.ClientTimeout(total=limit_s, sock_connect=min(limit_s, 5.0))
            async with self._http().post(
                url, json=payload, timeout=client_timeout, allow_redirects=False
            ) as response:
                status = response.status
                body = await response.read()
                location = response.headers.get("Location", "")
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
        if status in _REDIRECTS:
            # following it would turn the POST into a GET without its body: the method would
            # run with no parameters and answer nonsense, so say where the portal went instead
            where = mask_webhook(location) or "(no Location)"
            log.error(
                "bitrix24 portal moved: %s answers HTTP %s, Location: %s; "
                "update bitrix24.webhook_url",
                mask_webhook(url),
                status,
                where,
            )
            raise BitrixError(
                PORTAL_MOVED,
                f"HTTP {status} to {where}",
                status,
                method,
                sent=False,
                location=location or None,
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

    async def transfer(self, chat_id: int, target: Target) -> Seen:
        """Send one transfer of a dialog to ``target`` and see what it did.

        The transfer and a look at the dialog go in one ``batch`` (the look runs right after
        the transfer), so the answer costs one request. A refusal raises :class:`BitrixError`;
        otherwise the caller judges :attr:`Seen.after`, since ``result: true`` proves nothing.
        """
        return await self._write_and_look(TRANSFER, self.transfer_params(chat_id, target), chat_id)

    async def finish(self, chat_id: int) -> Seen:
        """Finish a dialog someone else holds (``imopenlines.operator.another.finish``) and
        see what it did, as :meth:`transfer` does."""
        return await self._write_and_look(FINISH, {"CHAT_ID": chat_id}, chat_id)

    async def _write_and_look(self, method: str, params: dict[str, Any], chat_id: int) -> Seen:
        deadline = _Deadline(self._settings.deadline_s)
        look: Call = (DIALOG_GET, {"CHAT_ID": chat_id})
        try:
            wrote, looked = await self._call_until(
                deadline, [(method, params), look], repeat_unknown=False
            )
        except BitrixError as err:
            if err.retry is not Retry.UNKNOWN:
                raise err.for_method(method) from None
            return await self._look_after(method, chat_id, err.for_method(method))
        unclear: BitrixError | None = None
        if isinstance(wrote, BitrixError):
            if wrote.retry is not Retry.UNKNOWN:
                raise wrote
            unclear = wrote  # the write failed inside the portal, maybe halfway
        if isinstance(looked, BitrixError):
            return await self._look_after(method, chat_id, unclear)
        try:
            return Seen(parse_dialog(looked), unclear)
        except BitrixError:
            return await self._look_after(method, chat_id, unclear)

    async def _look_after(self, method: str, chat_id: int, cause: BitrixError | None) -> Seen:
        """The dialog after a write whose own answer did not show it; never the write again."""
        if cause is not None:
            log.warning(
                "bitrix24 %s of %s: outcome unknown (%s), looking", method, chat_id, cause.code
            )
            await asyncio.sleep(SETTLE_S)
        try:
            return Seen(await self.dialog(chat_id), cause)
        except BitrixError as err:
            code = cause.code if cause is not None else "accepted"
            raise BitrixError(
                OUTCOME_UNKNOWN,
                f"{code}, and the dialog could not be checked ({err.code})",
                cause.status if cause is not None else None,
                method,
            ) from None


__all__ = ["BitrixClient", "BitrixError", "Dialog", "Seen", "mask_webhook", "parse_dialog"]
