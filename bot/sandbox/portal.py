"""A Bitrix24 portal simulator: an aiohttp app answering like an inbound-webhook REST endpoint.

Optionally it also answers OAuth application calls (``/rest/<method>.json`` with the access
token in ``auth``), checking the token against a set of valid and a set of expired tokens; see
``bot.sandbox.oauth.FakeOAuthServer`` for the authorization server that issues them.

Used by the embedded sandbox (``python -m bot demo``) and by the end-to-end tests as the fake
portal.  It keeps users, open lines (queues) and open-line dialogs in memory and implements
``imopenlines.dialog.get``, ``imopenlines.operator.transfer``,
``imopenlines.operator.another.finish``, ``batch``, ``profile``, ``scope``, and ``user.get`` /
``imopenlines.config.list.get`` for directory sync.  Around them: the per-portal leaky bucket,
webhook scopes (``403 insufficient_scope``), a "moved portal" mode answering every request with
a redirect, and scripted faults (error bodies, proxy HTML pages, delays, dropped connections,
"applied but the answer was lost", "applied after the client gave up").

What it models of the real imopenlines module:

* ``operator.transfer`` refuses loudly (``400 OPERATOR_WRONG``) only in its access check,
  before anything moves: an unknown chat (or one on a line the caller may not touch, see
  ``denied_lines``), or a target that is the webhook's own user.  Past that it answers
  ``{"result": true}`` whatever happens next, and the move itself may silently do nothing: an
  extranet, bot or connector user, an unknown or inactive user, an unknown line, a chat whose
  lock another transfer holds, a chat without an open session (finished).
* ``USER_ID`` beats ``QUEUE_ID``, which beats ``TRANSFER_ID`` (a user id or ``queue<ID>``).
* A move to a user makes them the owner (the line stays); a move to a queue leaves the dialog
  waiting (owner 0) and changes the line in field 7 of ``entity_data_1``.  ``entity_id`` keeps
  the line the chat was created in, forever.
* A transfer to whoever holds the dialog already is not a no-op: the portal re-adds the
  operator and posts a "transferred" message into the customer's chat
  (``SimDialog.system_messages``).
* ``operator.another.finish`` closes the session (field 5 of ``entity_data_1`` becomes 0);
  finishing a closed dialog is a quiet success.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

from aiohttp import web

from bot.sandbox.loopback import serve

__all__ = [
    "BATCH_MAX_COMMANDS",
    "Fault",
    "PortalCall",
    "PortalSimulator",
    "SimDialog",
    "SimOperator",
    "SimQueue",
    "error_body",
    "parse_php_query",
    "proxy_html",
]

JSON_CONTENT_TYPE: Final = "application/json"
HTML_CONTENT_TYPE: Final = "text/html; charset=utf-8"
BATCH_MAX_COMMANDS: Final = 50
LIST_PAGE_SIZE: Final = 50
OPERATING_WINDOW_S: Final = 600
USER_KINDS: Final = ("employee", "extranet", "bot", "connector")
REDIRECT_STATUSES: Final = frozenset({301, 302, 307, 308})
DEFAULT_SCOPES: Final = ("imopenlines", "user")
# The scope each method needs (``profile``, ``scope`` and ``batch`` need none).
_METHOD_SCOPES: Final[Mapping[str, str]] = {
    "imopenlines.dialog.get": "imopenlines",
    "imopenlines.operator.transfer": "imopenlines",
    "imopenlines.operator.another.finish": "imopenlines",
    "imopenlines.config.list.get": "imopenlines",
    "user.get": "user",
}

# code -> (HTTP status, error_description) variants, the default first.  From the facts sheet:
# method errors of the three imopenlines methods, then the system errors of any method.
_ERRORS: Final[Mapping[str, tuple[tuple[int, str], ...]]] = {
    # imopenlines.operator.transfer
    "CHAT_ID_EMPTY": ((400, "Chat ID can't be empty"),),
    "USER_ID_EMPTY": ((400, "User ID can't be empty"),),
    "QUEUE_ID_EMPTY": ((400, "QUEUE ID can't be empty"),),
    "TRANSFER_ID_EMPTY": ((400, "Queue ID or User ID can't be empty"),),
    "OPERATOR_WRONG": ((400, "You cannot redirect to this operator"),),
    # imopenlines.dialog.get
    "ACCESS_ERROR": ((400, "You do not have access to the specified dialog"),),
    "IM_NOT_INSTALLED": ((400, "Messenger is not installed."),),
    # imopenlines.operator.another.finish
    "CHAT_ID": ((400, "The provided chat identifier is invalid"),),
    "CHAT_TYPE": ((400, "The specified chat is not an open line"),),
    "USER_ID": ((400, "The provided user identifier is invalid"),),
    # ACCESS_DENIED: 403 system error by default, 400 from another.finish (pass status=400).
    "ACCESS_DENIED": (
        (403, "REST API is available only on commercial plans"),
        (400, "You cannot open this conversation as you do not have sufficient permissions"),
    ),
    # imopenlines.config.list.get (directory sync)
    "INVALID_FORMAT": ((400, "Invalid format of parameters"),),
    # system errors
    "QUERY_LIMIT_EXCEEDED": ((503, "Too many requests"),),
    "OPERATION_TIME_LIMIT": ((429, "Method is blocked due to operation time limit"),),
    "OVERLOAD_LIMIT": ((503, "REST API is blocked due to overload"),),
    "INTERNAL_SERVER_ERROR": ((500, "Internal server error"),),
    "ERROR_UNEXPECTED_ANSWER": ((500, "Server returned an unexpected response"),),
    "PORTAL_DELETED": ((500, "Portal was deleted"),),
    "NO_AUTH_FOUND": ((401, "Wrong authorization data"),),
    "expired_token": ((401, "The access token provided has expired"),),
    "INVALID_CREDENTIALS": ((403, "Invalid request credentials"),),
    "insufficient_scope": (
        (403, "The request requires higher privileges than provided by the webhook token"),
    ),
    "user_access_error": ((403, "The user does not have access to the application"),),
    "INVALID_REQUEST": ((400, "Https required"),),
    "ERROR_BATCH_LENGTH_EXCEEDED": ((400, "Max batch length exceeded"),),
    "ERROR_BATCH_METHOD_NOT_ALLOWED": ((405, "Method is not allowed for batch usage"),),
    "ERROR_METHOD_NOT_FOUND": ((404, "Method not found!"),),
    "ERROR_MANIFEST_IS_NOT_AVAILABLE": ((404, "Manifest is not available"),),
}

_NGINX_REASONS: Final[Mapping[int, str]] = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}

_INT_RE: Final = re.compile(r"\s*[+-]?\d+\s*")
_KEY_RE: Final = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")


def error_body(code: str, *, status: int | None = None) -> tuple[int, dict[str, str]]:
    """Return the facts-sheet HTTP status and ``{"error", "error_description"}`` body for a code.

    ``ACCESS_DENIED`` is both a 403 system error (the default) and a 400 error of
    ``imopenlines.operator.another.finish``: pick the latter with ``status=400``.
    Raises ``KeyError`` for a code the facts sheet does not know.
    """
    variants = _ERRORS[code]
    chosen = next((v for v in variants if v[0] == status), variants[0])
    return chosen[0], {"error": code, "error_description": chosen[1]}


def proxy_html(status: int) -> str:
    """Return an nginx-like HTML error page for ``status`` (what a proxy in front answers)."""
    reason = _NGINX_REASONS.get(status)
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
    title = html.escape(f"{status} {reason}")
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


def parse_php_query(query: str) -> dict[str, Any]:
    """Parse a urlencoded string the way PHP does (``cmd[t1]=x`` nests; the last value wins)."""
    out: dict[str, Any] = {}
    for raw_key, value in parse_qsl(query, keep_blank_values=True):
        match = _KEY_RE.match(raw_key)
        if match is None:
            out[raw_key] = value
            continue
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = out
        for i, part in enumerate(path):
            key = part if part != "" else str(len(node))
            if i == len(path) - 1:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
    return out


def _as_int(value: Any) -> int | None:
    """PHP-ish integer reading: ints and digit strings; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value):
        return int(value)
    return None


def _positive_int(value: Any) -> int | None:
    """Return ``value`` as a positive int, or None."""
    number = _as_int(value)
    return number if number is not None and number > 0 else None


def _is_set(params: Mapping[str, Any], key: str) -> bool:
    """PHP ``isset``: the key exists and is not null."""
    return params.get(key) is not None


def _values(value: Any) -> list[Any]:
    """A filter value as a list: PHP-style arrays arrive as dicts, JSON ones as lists."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return value
    return [value]


def _truthy(value: Any) -> bool:
    """PHP-ish truth of a flag such as ``halt`` or ``ACTIVE`` (1, "1", true, "Y", "true")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().upper() in {"Y", "TRUE"}:
        return True
    number = _as_int(value)
    return number is not None and number != 0


def _batch_commands(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``(key, "method?query")`` pairs of a ``batch`` request, in order."""
    cmd = params.get("cmd")
    if isinstance(cmd, list):
        return [(str(i), str(c)) for i, c in enumerate(cmd)]
    if isinstance(cmd, dict):
        return [(str(k), str(c)) for k, c in cmd.items()]
    return []


def _inner_methods(params: Mapping[str, Any]) -> set[str]:
    """The lower-case method names a ``batch`` request carries."""
    return {
        c.partition("?")[0].strip().lower().removesuffix(".json")
        for _, c in _batch_commands(params)
    }


def _iso(ts: float) -> str:
    """Format a unix timestamp the way the portal does (``2026-03-16T15:10:32+02:00``)."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _time_block(start: float, finish: float) -> dict[str, Any]:
    """Build the ``time`` object of a success answer."""
    return {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": finish - start,
        "date_start": _iso(start),
        "date_finish": _iso(finish),
        "operating_reset_at": int(start) + OPERATING_WINDOW_S,
        "operating": 0,
    }


@dataclass
class SimOperator:
    """A portal user.

    ``kind``: ``employee`` (can hold open-line dialogs), ``extranet``, ``bot`` (a chat bot) or
    ``connector`` (the user a channel's customer appears as).  ``user.get`` lists employees and
    extranet users only; a transfer to anyone but an active employee silently does nothing.
    ``online``: whether they are signed in now (``IS_ONLINE``, always ``"N"`` when inactive);
    tests and the sandbox set it, transfers ignore it, as the portal does.
    """

    id: int
    name: str
    active: bool = True
    kind: str = "employee"
    online: bool = True

    def __post_init__(self) -> None:
        if self.kind not in USER_KINDS:
            raise ValueError(f"SimOperator.kind must be one of {USER_KINDS}, not {self.kind!r}")


@dataclass
class SimQueue:
    """An open line (queue); ``operator_ids`` only feeds ``imopenlines.config.list.get``."""

    id: int
    name: str
    operator_ids: tuple[int, ...] = ()


@dataclass
class SimDialog:
    """An open-line dialog; ``owner`` 0 means waiting in the line's queue.

    ``line_id`` is the line the dialog is in now (field 7 of ``entity_data_1``);
    ``created_line_id`` the line the chat was created in (in ``entity_id``; defaults to
    ``line_id``).  ``session_id`` is the open session's number, still found by
    ``dialog.get SESSION_ID=`` after the dialog is ``closed`` (field 5 then reads 0).
    ``locked``: another transfer of this chat holds its lock, so transfers silently do
    nothing.  ``system_messages``: what the portal posted into the customer's chat on a
    transfer to the current holder.  ``manager_list`` defaults to ``[owner]`` (``[]`` when
    waiting); ``dialog.get`` keeps it consistent with ``owner`` if a test edits ``owner``.
    """

    chat_id: int
    session_id: int
    name: str
    owner: int
    line_id: int
    connector: str = "telegram"
    closed: bool = False
    created_line_id: int | None = None
    locked: bool = False
    system_messages: list[str] = field(default_factory=list)
    manager_list: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.created_line_id is None:
            self.created_line_id = self.line_id
        if not self.manager_list and self.owner:
            self.manager_list = [self.owner]

    @property
    def entity_id(self) -> str:
        """``<connector>|<line created in>|<chat in channel>|<user in channel>`` (USER_CODE)."""
        line = self.line_id if self.created_line_id is None else self.created_line_id
        return f"{self.connector}|{line}|{self.chat_id}|{self.chat_id}"

    @property
    def managers(self) -> list[int]:
        """``manager_list`` as ``dialog.get`` shows it: empty while waiting, else the owner's."""
        if not self.owner:
            return []
        if self.owner not in self.manager_list:
            return [self.owner]
        return list(self.manager_list)


FaultAction = Literal["respond", "drop", "normal"]


@dataclass(frozen=True)
class Fault:
    """A scripted misbehaviour for the next matching request.

    ``action``: ``respond`` sends ``status``/``body``/``content_type``; ``drop`` closes the
    connection without an answer; ``normal`` sends the method's real answer.  ``apply`` runs the
    method for real first (the "outcome unknown" cases); ``delay_s`` waits before answering.
    ``apply_after_s`` > 0 (with ``apply``) runs the method that long after the request arrived,
    in the background, whether or not the client is still there; ``delay_s`` then counts from
    the arrival too.  Build one with the class methods rather than by hand.
    """

    action: FaultAction
    status: int = 200
    body: bytes = b""
    content_type: str = JSON_CONTENT_TYPE
    delay_s: float = 0.0
    apply: bool = False
    apply_after_s: float = 0.0

    @classmethod
    def error(
        cls,
        code: str,
        *,
        status: int | None = None,
        description: str | None = None,
        apply: bool = False,
        delay_s: float = 0.0,
    ) -> Fault:
        """Answer a Bitrix24 error body; status and description default to the facts sheet's.

        A code the facts sheet lacks defaults to 400 with the code as its description.
        """
        if code in _ERRORS:
            default_status, payload = error_body(code, status=status)
        else:
            default_status, payload = 400, {"error": code, "error_description": code}
        if description is not None:
            payload["error_description"] = description
        return cls.json(
            default_status if status is None else status, payload, apply=apply, delay_s=delay_s
        )

    @classmethod
    def json(cls, status: int, body: Any, *, apply: bool = False, delay_s: float = 0.0) -> Fault:
        """Answer ``status`` with ``body`` serialised as JSON (e.g. ``{"result": false}``)."""
        return cls("respond", status, json.dumps(body).encode(), JSON_CONTENT_TYPE, delay_s, apply)

    @classmethod
    def raw(
        cls,
        status: int,
        body: str | bytes,
        content_type: str = HTML_CONTENT_TYPE,
        *,
        apply: bool = False,
        delay_s: float = 0.0,
    ) -> Fault:
        """Answer ``status`` with a raw body (an empty 200, broken JSON, any HTML page)."""
        data = body.encode() if isinstance(body, str) else body
        return cls("respond", status, data, content_type, delay_s, apply)

    @classmethod
    def proxy_page(cls, status: int = 502, *, apply: bool = False, delay_s: float = 0.0) -> Fault:
        """Answer an nginx-like HTML error page (502, 503, 504...)."""
        return cls.raw(status, proxy_html(status), apply=apply, delay_s=delay_s)

    @classmethod
    def delay(cls, seconds: float, *, apply: bool = True) -> Fault:
        """Hold the answer ``seconds`` (to trip client timeouts).

        ``apply=True``: the method runs at once and its real answer comes after the delay
        ("slow success").  ``apply=False``: nothing runs and a 504 proxy page comes after
        the delay.
        """
        if apply:
            return cls("normal", delay_s=seconds, apply=True)
        return cls.proxy_page(504, delay_s=seconds)

    @classmethod
    def drop(cls, *, apply: bool = False, delay_s: float = 0.0) -> Fault:
        """Read the request, then close the connection without answering."""
        return cls("drop", status=0, delay_s=delay_s, apply=apply)

    @classmethod
    def apply_then_fail(cls, status: int = 504) -> Fault:
        """Run the method for real, then answer an HTML proxy page (outcome unknown)."""
        return cls.proxy_page(status, apply=True)

    @classmethod
    def late(cls, apply_after_s: float, answer_after_s: float) -> Fault:
        """A slow portal: run the method ``apply_after_s`` after the request arrived (even if
        the client has given up by then), send its real answer ``answer_after_s`` after it."""
        if apply_after_s < 0 or answer_after_s < apply_after_s:
            raise ValueError("Fault.late needs 0 <= apply_after_s <= answer_after_s")
        return cls("normal", delay_s=answer_after_s, apply=True, apply_after_s=apply_after_s)


@dataclass
class PortalCall:
    """One request that passed authorization and the rate limit (or one batch command).

    ``status``/``body`` are what the client was sent (status 0 and body None for a dropped
    connection or one not answered yet; a str body for raw faults); ``applied`` tells whether
    the method ran (for ``Fault.late``: it turns True once it has).
    """

    method: str
    params: dict[str, Any]
    status: int
    body: Any
    at: float
    in_batch: bool = False
    fault: Fault | None = None
    applied: bool = True
    token: str | None = None
    """The OAuth access token the call carried (None for webhook calls and batch commands)."""


@dataclass
class _Page:
    """A list result with the portal's top-level ``total`` / ``next``."""

    items: list[Any]
    total: int
    next: int | None


class _MethodError(Exception):
    """A Bitrix24 error answer raised by a method implementation."""

    def __init__(self, code: str, *, status: int | None = None) -> None:
        self.status, self.body = error_body(code, status=status)
        super().__init__(code)


@dataclass
class _FaultSlot:
    method: str | None
    fault: Fault
    left: int
    carrying: str | None = None


@dataclass
class _Outcome:
    """What the portal answers: a JSON body, a raw body, or nothing (drop)."""

    status: int
    body: Any = None
    raw: bytes | None = None
    content_type: str = JSON_CONTENT_TYPE
    drop: bool = False
    delay_s: float = 0.0


MethodImpl = Callable[[dict[str, Any]], Any]
ExecResult = tuple[int, dict[str, Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PortalSimulator:
    """An in-memory Bitrix24 portal served over HTTP on localhost.

    Webhook calls go to ``url`` (``/rest/<user>/<code>/<method>.json``).  With ``oauth_tokens``
    given (even an empty set) OAuth application calls are answered too: ``oauth_url`` +
    ``<method>.json`` with the access token in ``auth`` (JSON body, form field or query string).
    A token in ``expired_tokens`` gets ``401 expired_token``, one not in ``oauth_tokens``
    ``401 NO_AUTH_FOUND``; a valid one runs the method like a webhook call would (``auth`` is
    taken out of the params first).  Without ``oauth_tokens`` (the default) such calls get
    ``401 NO_AUTH_FOUND`` as on a portal where the app is not installed.

    ``scopes`` are granted to the webhook (and to OAuth tokens): ``imopenlines.*`` needs
    ``imopenlines``, ``user.get`` needs ``user``; ``profile``, ``scope`` and ``batch`` need none.
    ``webhook_user_id`` / ``webhook_user_name`` are who ``profile`` says is calling.

    Test handles: ``moves`` (every transfer that changed a dialog), ``denied_lines`` (lines the
    caller has no rights on: their chats look unknown), ``move_to`` / ``redirected``,
    ``operators[id].online`` (who ``user.get`` says is online), ``scopes`` (a set: take
    ``user`` out and ``user.get`` answers ``403 insufficient_scope``).
    """

    def __init__(
        self,
        *,
        operators: Iterable[SimOperator],
        queues: Iterable[SimQueue],
        dialogs: Iterable[SimDialog],
        webhook_user_id: int = 1,
        webhook_code: str = "sandbox0secret0code",
        leak_per_s: float = 2.0,
        burst: int = 50,
        latency_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        oauth_tokens: Iterable[str] | None = None,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        webhook_user_name: str = "Webhook User",
    ) -> None:
        self.operators: dict[int, SimOperator] = {op.id: op for op in operators}
        self.queues: dict[int, SimQueue] = {q.id: q for q in queues}
        self.dialogs: dict[int, SimDialog] = {d.chat_id: d for d in dialogs}
        self.webhook_user_id = webhook_user_id
        self.webhook_user_name = webhook_user_name
        self.webhook_code = webhook_code
        self.scopes: set[str] = set(scopes)
        self.denied_lines: set[int] = set()
        self.moves: list[tuple[int, str, int]] = []
        """(chat_id, "user" | "queue", id) of every transfer that changed a dialog."""
        self.redirected = 0
        """How many requests the moved portal answered with a redirect."""
        self._moved_to: tuple[str, int] | None = None
        self._late: set[asyncio.Task[ExecResult]] = set()
        self.leak_per_s = leak_per_s
        self.burst = burst
        self.latency_s = latency_s
        self.calls: list[PortalCall] = []
        self.rejected_by_limit = 0
        self.oauth_tokens: set[str] | None = None if oauth_tokens is None else set(oauth_tokens)
        self.expired_tokens: set[str] = set()
        self._clock = clock
        self._bucket = 0.0
        self._bucket_at: float | None = None
        self._faults: list[_FaultSlot] = []
        self._created: dict[int, float] = {}
        now = time.time()
        for chat_id in self.dialogs:
            self._created[chat_id] = now - 3600
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._base_url: str | None = None
        self._methods: dict[str, MethodImpl] = {
            "imopenlines.dialog.get": self._dialog_get,
            "imopenlines.operator.transfer": self._transfer,
            "imopenlines.operator.another.finish": self._another_finish,
            "imopenlines.config.list.get": self._config_list_get,
            "user.get": self._user_get,
            "profile": self._profile,
            "scope": self._scope,
        }

        @web.middleware
        async def redirect(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._redirect_middleware(request, handler)

        self.app = web.Application(middlewares=[redirect])
        route = "/rest/{user_id}/{code}/{method}"
        self.app.router.add_get(route, self._handle, allow_head=False)
        self.app.router.add_post(route, self._handle)
        oauth_route = "/rest/{method}"
        self.app.router.add_get(oauth_route, self._handle_oauth, allow_head=False)
        self.app.router.add_post(oauth_route, self._handle_oauth)
        self.app.router.add_route("*", "/rest/{tail:.*}", self._no_auth)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = any free port); return the webhook URL."""
        if self._runner is not None:
            return self.url
        self._closing = asyncio.Event()
        self._runner, self._base_url = await serve(self.app, host, port)
        self._url = f"{self._base_url}/rest/{self.webhook_user_id}/{self.webhook_code}/"
        return self._url

    async def close(self) -> None:
        """Stop serving; requests held by delays are released at once, late applies that
        have not run yet never will."""
        self._closing.set()
        late, self._late = set(self._late), set()
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> PortalSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The webhook URL ``http://127.0.0.1:PORT/rest/<user>/<code>/`` (after ``start``)."""
        if self._url is None:
            raise RuntimeError("the portal simulator is not started")
        return self._url

    @property
    def base_url(self) -> str:
        """The portal's address ``http://127.0.0.1:PORT`` (no trailing slash; after ``start``).

        What an OAuth client is configured with as the portal (it appends ``/rest/``).
        """
        if self._base_url is None:
            raise RuntimeError("the portal simulator is not started")
        return self._base_url

    @property
    def oauth_url(self) -> str:
        """The OAuth REST base ``http://127.0.0.1:PORT/rest/`` (after ``start``).

        Call ``<oauth_url><method>.json`` with ``auth`` set to an access token; this is also
        the ``client_endpoint`` the OAuth server answers.
        """
        return f"{self.base_url}/rest/"

    @property
    def oauth_enabled(self) -> bool:
        """Whether OAuth application calls are answered (``oauth_tokens`` is not None)."""
        return self.oauth_tokens is not None

    def add_token(self, token: str) -> None:
        """Make ``token`` a valid access token (switches OAuth on if it was off)."""
        if self.oauth_tokens is None:
            self.oauth_tokens = set()
        self.expired_tokens.discard(token)
        self.oauth_tokens.add(token)

    def expire(self, token: str) -> None:
        """Expire ``token``: calls with it now get ``401 expired_token``."""
        if self.oauth_tokens is not None:
            self.oauth_tokens.discard(token)
        self.expired_tokens.add(token)

    # --- test helpers ----------------------------------------------------------------------

    def inject(
        self, method: str | None, fault: Fault, times: int = 1, *, carrying: str | None = None
    ) -> None:
        """Queue ``fault`` for the next ``times`` requests to ``method`` (None = any method).

        ``carrying`` narrows a ``batch`` fault to batches with that inner method, so a
        start-up check or a plain look does not use up a fault meant for a transfer.
        """
        if times > 0:
            self._faults.append(_FaultSlot(method, fault, times, carrying))

    @property
    def pending_faults(self) -> int:
        """How many injected faults are still to be played."""
        return sum(slot.left for slot in self._faults)

    @property
    def bucket_level(self) -> float:
        """The leaky-bucket counter as of the last request."""
        return self._bucket

    def requests_carrying(self, method: str) -> list[PortalCall]:
        """Requests (not batch commands) to ``method``, or batches that carry it."""
        wanted = method.lower()
        return [
            call
            for call in self.calls
            if not call.in_batch
            and (
                call.method.lower() == wanted
                or (call.method == "batch" and wanted in _inner_methods(call.params))
            )
        ]

    def calls_to(self, method: str) -> list[PortalCall]:
        """Recorded calls of one method (batch commands included)."""
        return [call for call in self.calls if call.method == method]

    def move_to(self, new_base_url: str | None, status: int = 301) -> None:
        """Play a portal that moved: every request now gets ``status`` with ``Location:
        <new_base_url><path and query>`` and nothing runs (no method, no leaky bucket).
        ``None`` stops it."""
        if new_base_url is None:
            self._moved_to = None
            return
        if status not in REDIRECT_STATUSES:
            raise ValueError(f"redirect status must be one of {sorted(REDIRECT_STATUSES)}")
        self._moved_to = (new_base_url.rstrip("/"), status)

    @property
    def moved_to(self) -> str | None:
        """The base URL redirects point to, or None when the portal answers normally."""
        return None if self._moved_to is None else self._moved_to[0]

    # --- HTTP plumbing ---------------------------------------------------------------------

    async def _redirect_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        """In redirect mode answer every request (any path, any verb) with the redirect."""
        if self._moved_to is None:
            return await handler(request)
        base, status = self._moved_to
        self.redirected += 1
        location = f"{base}{request.path_qs}"
        title = html.escape(f"{status} {HTTPStatus(status).phrase}")
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return web.Response(
            status=status,
            body=page.encode(),
            headers={"Location": location, "Content-Type": HTML_CONTENT_TYPE},
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Serve ``/rest/{user_id}/{code}/{method}[.json]``."""
        arrived = self._clock()
        if not self._admit(arrived):
            self.rejected_by_limit += 1
            return await self._send(request, self._error_outcome("QUERY_LIMIT_EXCEEDED"))
        user_id = _as_int(request.match_info["user_id"])
        if user_id != self.webhook_user_id or request.match_info["code"] != self.webhook_code:
            return await self._send(request, self._error_outcome("NO_AUTH_FOUND"))
        params = await _read_params(request)
        return await self._run(request, params, arrived)

    async def _handle_oauth(self, request: web.Request) -> web.StreamResponse:
        """Serve ``/rest/{method}[.json]``: an OAuth application call, ``auth`` = access token."""
        if self.oauth_tokens is None:
            return await self._no_auth(request)
        arrived = self._clock()
        if not self._admit(arrived):
            self.rejected_by_limit += 1
            return await self._send(request, self._error_outcome("QUERY_LIMIT_EXCEEDED"))
        params = await _read_params(request)
        token = params.pop("auth", None)
        if isinstance(token, str) and token in self.expired_tokens:
            return await self._send(request, self._error_outcome("expired_token"))
        if not isinstance(token, str) or token not in self.oauth_tokens:
            return await self._send(request, self._error_outcome("NO_AUTH_FOUND"))
        return await self._run(request, params, arrived, token=token)

    async def _run(
        self,
        request: web.Request,
        params: dict[str, Any],
        arrived: float,
        *,
        token: str | None = None,
    ) -> web.StreamResponse:
        """Run an authorized call: play a queued fault or the method, record it, answer."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        method = request.match_info["method"].lower().removesuffix(".json")
        fault = self._take_fault(method, params)
        call = PortalCall(method, params, 0, None, arrived, fault=fault, token=token)
        self.calls.append(call)
        run = fault is None or fault.apply or fault.action == "normal"
        late = run and fault is not None and fault.apply_after_s > 0
        call.applied = run and not late
        outcome = _Outcome(0)
        if late and fault is not None:
            task = self._apply_later(call, method, params, arrived, fault.apply_after_s)
            if fault.action == "normal":
                # asyncio.wait: if this handler is cancelled, the apply still happens.
                await asyncio.wait({task})
                if task.cancelled():  # the simulator is closing
                    outcome = _Outcome(0, drop=True)
                else:
                    status, body = task.result()
                    outcome = _Outcome(status, body)
        elif run:
            status, body = self._execute(method, params, arrived=arrived)
            outcome = _Outcome(status, body)
        if fault is not None:
            if fault.action == "drop":
                outcome = _Outcome(0, drop=True)
            elif fault.action == "respond":
                outcome = _Outcome(fault.status, raw=fault.body, content_type=fault.content_type)
            outcome.delay_s = fault.delay_s
            if late:  # the delay counts from the arrival
                outcome.delay_s = max(0.0, fault.delay_s - (loop.time() - started))
        call.status = outcome.status
        call.body = _recorded_body(outcome)
        return await self._send(request, outcome)

    def _apply_later(
        self, call: PortalCall, method: str, params: dict[str, Any], arrived: float, after: float
    ) -> asyncio.Task[ExecResult]:
        """Run the method ``after`` seconds from now in a task of its own (not the handler's,
        so a client hanging up does not stop it); ``close`` cancels what has not run yet."""

        async def apply() -> ExecResult:
            await asyncio.sleep(after)
            result = self._execute(method, params, arrived=arrived)
            call.applied = True
            return result

        task = asyncio.create_task(apply())
        self._late.add(task)
        task.add_done_callback(self._late.discard)
        return task

    async def _no_auth(self, request: web.Request) -> web.StreamResponse:
        """Any other ``/rest/...`` path: no webhook credentials in it."""
        if not self._admit(self._clock()):
            self.rejected_by_limit += 1
            return await self._send(request, self._error_outcome("QUERY_LIMIT_EXCEEDED"))
        return await self._send(request, self._error_outcome("NO_AUTH_FOUND"))

    def _error_outcome(self, code: str) -> _Outcome:
        status, body = error_body(code)
        return _Outcome(status, body)

    async def _send(self, request: web.Request, outcome: _Outcome) -> web.StreamResponse:
        """Wait (fault delay, then latency), then answer or drop the connection."""
        await self._pause(outcome.delay_s)
        if outcome.drop:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=200)
        await self._pause(self.latency_s)
        if outcome.raw is not None:
            return web.Response(
                status=outcome.status,
                body=outcome.raw,
                headers={"Content-Type": outcome.content_type},
            )
        return web.Response(
            status=outcome.status,
            body=json.dumps(outcome.body).encode(),
            content_type=JSON_CONTENT_TYPE,
            charset="utf-8",
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless the simulator is closing."""
        if seconds <= 0 or self._closing.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _admit(self, now: float) -> bool:
        """Leaky bucket: drain by elapsed time, refuse above ``burst``, else count the request."""
        if self._bucket_at is not None:
            elapsed = max(0.0, now - self._bucket_at)
            self._bucket = max(0.0, self._bucket - elapsed * self.leak_per_s)
        self._bucket_at = now
        if self._bucket > self.burst:
            return False
        self._bucket += 1
        return True

    def _take_fault(self, method: str, params: dict[str, Any]) -> Fault | None:
        """Pop the first queued fault that matches ``method`` (and what the batch carries)."""
        for index, slot in enumerate(self._faults):
            if slot.method is not None and slot.method.lower() != method:
                continue
            if slot.carrying is None or slot.carrying.lower() in _inner_methods(params):
                slot.left -= 1
                if slot.left <= 0:
                    del self._faults[index]
                return slot.fault
        return None

    # --- method execution ------------------------------------------------------------------

    def _execute(
        self, method: str, params: dict[str, Any], *, arrived: float, in_batch: bool = False
    ) -> tuple[int, dict[str, Any]]:
        """Run one method; return the HTTP status and the full JSON body."""
        start = time.time()
        try:
            if method == "batch":
                if in_batch:
                    raise _MethodError("ERROR_BATCH_METHOD_NOT_ALLOWED")
                result: Any = self._batch(params, arrived)
            else:
                impl = self._methods.get(method)
                if impl is None:
                    raise _MethodError("ERROR_METHOD_NOT_FOUND")
                scope = _METHOD_SCOPES.get(method)
                if scope is not None and scope not in self.scopes:
                    raise _MethodError("insufficient_scope")
                result = impl(params)
        except _MethodError as exc:
            return exc.status, dict(exc.body)
        body: dict[str, Any]
        if isinstance(result, _Page):
            body = {"result": result.items, "total": result.total}
            if result.next is not None:
                body["next"] = result.next
        else:
            body = {"result": result}
        body["time"] = _time_block(start, time.time())
        return 200, body

    def _batch(self, params: dict[str, Any], arrived: float) -> dict[str, Any]:
        """``batch``: run up to 50 ``method?QUERY`` commands; errors go to ``result_error``."""
        commands = _batch_commands(params)
        halt = _truthy(params.get("halt", 0))
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for index, (key, command) in enumerate(commands):
            if index >= BATCH_MAX_COMMANDS:
                errors[key] = error_body("ERROR_BATCH_LENGTH_EXCEEDED")[1]
                if halt:
                    break
                continue
            name, _, query = str(command).partition("?")
            method = name.strip().lower().removesuffix(".json")
            inner = parse_php_query(query)
            status, body = self._execute(method, inner, arrived=arrived, in_batch=True)
            self.calls.append(PortalCall(method, inner, status, body, arrived, in_batch=True))
            if "error" in body:
                errors[key] = body
                if halt:
                    break
                continue
            results[key] = body["result"]
            times[key] = body["time"]
            if "total" in body:
                totals[key] = body["total"]
            if "next" in body:
                nexts[key] = body["next"]

        def part(values: dict[str, Any]) -> dict[str, Any] | list[Any]:
            return values if values else []

        return {
            "result": part(results),
            "result_error": part(errors),
            "result_total": part(totals),
            "result_next": part(nexts),
            "result_time": part(times),
        }

    def _find(self, chat_id: int | None) -> SimDialog | None:
        """The access check: the open-line dialog ``chat_id`` if the caller may touch it."""
        dialog = self.dialogs.get(chat_id) if chat_id is not None else None
        if dialog is None or dialog.line_id in self.denied_lines:
            return None
        return dialog

    def _entity_data_1(self, dialog: SimDialog) -> str:
        """``CRM|CRM_ENTITY_TYPE|CRM_ENTITY_ID|PAUSE|WAIT_ACTION|SESSION_ID|DATE_CREATE|LINE_ID|
        BLOCK_DATE|BLOCK_REASON``: the session is 0 once closed, the line is the current one."""
        session = 0 if dialog.closed else dialog.session_id
        created = int(self._created.setdefault(dialog.chat_id, time.time()))
        return f"N|NONE|0|N|N|{session}|{created}|{dialog.line_id}|0|0"

    def _dialog_get(self, params: dict[str, Any]) -> dict[str, Any]:
        """``imopenlines.dialog.get`` by CHAT_ID, DIALOG_ID, SESSION_ID or USER_CODE."""
        dialog: SimDialog | None = None
        if _is_set(params, "CHAT_ID"):
            dialog = self._find(_positive_int(params["CHAT_ID"]))
        elif _is_set(params, "DIALOG_ID"):
            raw = str(params["DIALOG_ID"])
            dialog = self._find(_positive_int(raw[4:]) if raw.startswith("chat") else None)
        elif _is_set(params, "SESSION_ID"):
            session_id = _positive_int(params["SESSION_ID"])
            found = next((d for d in self.dialogs.values() if d.session_id == session_id), None)
            dialog = self._find(found.chat_id if found is not None else None)
        elif _is_set(params, "USER_CODE"):
            code = str(params["USER_CODE"])
            found = next((d for d in self.dialogs.values() if d.entity_id == code), None)
            dialog = self._find(found.chat_id if found is not None else None)
        if dialog is None:
            raise _MethodError("ACCESS_ERROR")
        entity_data_1 = self._entity_data_1(dialog)
        return {
            "id": dialog.chat_id,
            "name": dialog.name,
            "owner": dialog.owner,
            "type": "lines",
            "entity_type": "LINES",
            "entity_id": dialog.entity_id,
            "entity_data_1": entity_data_1,
            "manager_list": dialog.managers,
            "date_create": _iso(self._created[dialog.chat_id]),
            "dialog_id": f"chat{dialog.chat_id}",
        }

    def _transfer(self, params: dict[str, Any]) -> bool:
        """``imopenlines.operator.transfer`` to a user (USER_ID) or a line (QUEUE_ID).

        Parameter errors, then the access check (``OPERATOR_WRONG``); past it the answer is
        ``true`` even when the move itself does nothing (see :meth:`_move`).
        """
        chat_id = _positive_int(params.get("CHAT_ID"))
        if chat_id is None:
            raise _MethodError("CHAT_ID_EMPTY")
        kind: str
        if _is_set(params, "USER_ID"):  # USER_ID wins over QUEUE_ID and TRANSFER_ID
            kind, target = "user", _positive_int(params["USER_ID"])
        elif _is_set(params, "QUEUE_ID"):
            kind, target = "queue", _positive_int(params["QUEUE_ID"])
        elif _is_set(params, "TRANSFER_ID"):
            raw = params["TRANSFER_ID"]
            if isinstance(raw, str) and raw.strip().startswith("queue"):
                kind, target = "queue", _positive_int(raw.strip()[5:])
            else:
                kind, target = "user", _positive_int(raw)
        else:
            raise _MethodError("TRANSFER_ID_EMPTY")
        if target is None:
            raise _MethodError("USER_ID_EMPTY" if kind == "user" else "QUEUE_ID_EMPTY")
        dialog = self._find(chat_id)
        if dialog is None or (kind == "user" and target == self.webhook_user_id):
            raise _MethodError("OPERATOR_WRONG")
        self._move(dialog, kind, target)
        return True

    def _move(self, dialog: SimDialog, kind: str, target: int) -> None:
        """What the portal does after answering ``true``: maybe nothing at all."""
        if dialog.locked or dialog.closed:  # another transfer holds the lock / no session
            return
        if kind == "user":
            user = self.operators.get(target)
            # Extranet, bot and connector users are refused silently; an unknown or
            # inactive user is modelled on them (the portal finds no operator to add).
            if user is None or not user.active or user.kind != "employee":
                return
            if dialog.owner == target:  # re-added: only the customer's chat shows it
                dialog.system_messages.append(f"transferred to {target}")
                return
            dialog.owner = target
            dialog.manager_list = [target]
        else:
            if target not in self.queues:
                return
            if dialog.owner == 0 and dialog.line_id == target:
                dialog.system_messages.append(f"transferred to queue {target}")
                return
            dialog.owner = 0
            dialog.manager_list = []
            dialog.line_id = target
        self.moves.append((dialog.chat_id, kind, target))

    def _another_finish(self, params: dict[str, Any]) -> bool:
        """``imopenlines.operator.another.finish``: close the dialog whoever holds it."""
        chat_id = _positive_int(params.get("CHAT_ID"))
        if chat_id is None:
            raise _MethodError("CHAT_ID")
        dialog = self._find(chat_id)
        if dialog is None:
            raise _MethodError("ACCESS_DENIED", status=400)
        if not dialog.closed:
            dialog.closed = True
            dialog.owner = 0
            dialog.manager_list = []
        return True

    def _user_get(self, params: dict[str, Any]) -> _Page:
        """``user.get``: employees and extranet users, 50 a page, ``FILTER`` on ``ACTIVE``,
        ``USER_TYPE`` and ``ID`` (bots and connector users are never listed)."""
        flt = params.get("FILTER")
        flt = flt if isinstance(flt, dict) else {}
        users = sorted(
            (op for op in self.operators.values() if op.kind in ("employee", "extranet")),
            key=lambda op: op.id,
        )
        if _is_set(flt, "ACTIVE"):
            wanted = _truthy(flt["ACTIVE"])
            users = [op for op in users if op.active == wanted]
        if _is_set(flt, "USER_TYPE"):
            types = {str(t).strip().lower() for t in _values(flt["USER_TYPE"])}
            users = [op for op in users if op.kind in types]
        if _is_set(flt, "ID"):
            id_set = {_as_int(i) for i in _values(flt["ID"])}
            users = [op for op in users if op.id in id_set]
        start = max(0, _as_int(params.get("start")) or 0)
        page = users[start : start + LIST_PAGE_SIZE]
        items = []
        for op in page:
            first, _, last = op.name.partition(" ")
            items.append(
                {
                    "ID": str(op.id),
                    "ACTIVE": op.active,
                    "NAME": first,
                    "LAST_NAME": last,
                    "IS_ONLINE": "Y" if op.active and op.online else "N",
                    "USER_TYPE": op.kind,
                }
            )
        following = start + LIST_PAGE_SIZE
        return _Page(items, len(users), following if following < len(users) else None)

    def _profile(self, params: dict[str, Any]) -> dict[str, Any]:
        """``profile``: the webhook's own user (an administrator)."""
        first, _, last = self.webhook_user_name.partition(" ")
        return {
            "ID": str(self.webhook_user_id),
            "ADMIN": True,
            "NAME": first,
            "LAST_NAME": last,
            "PERSONAL_GENDER": "",
            "TIME_ZONE": "",
            "TIME_ZONE_OFFSET": 0,
        }

    def _scope(self, params: dict[str, Any]) -> list[str]:
        """``scope``: the scopes granted to the caller."""
        return sorted(self.scopes)

    def _config_list_get(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """``imopenlines.config.list.get``: lines with ``PARAMS.limit``/``offset``."""
        opts = params.get("PARAMS", {})
        if not isinstance(opts, dict):
            raise _MethodError("INVALID_FORMAT")
        limit = _as_int(opts.get("limit", LIST_PAGE_SIZE))
        offset = _as_int(opts.get("offset", 0))
        if limit is None or offset is None or limit <= 0 or offset < 0:
            raise _MethodError("INVALID_FORMAT")
        options = params.get("OPTIONS")
        with_queue = isinstance(options, dict) and _truthy(options.get("QUEUE"))
        lines = sorted(self.queues.values(), key=lambda q: q.id)
        out: list[dict[str, Any]] = []
        for line in lines[offset : offset + min(limit, 200)]:
            item: dict[str, Any] = {"ID": str(line.id), "LINE_NAME": line.name, "ACTIVE": "Y"}
            if with_queue:
                item["QUEUE"] = [str(i) for i in line.operator_ids]
                item["QUEUE_USERS_FIELDS"] = {
                    str(i): {"USER_NAME": self.operators[i].name if i in self.operators else ""}
                    for i in line.operator_ids
                }
            out.append(item)
        return out


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Merge the query string and the body (JSON or urlencoded) into one parameter dict."""
    params = parse_php_query(request.query_string)
    if request.method != "POST" or not request.body_exists:
        return params
    raw = await request.read()
    if request.content_type == JSON_CONTENT_TYPE or request.content_type.endswith("+json"):
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            data = None
        if isinstance(data, dict):
            params.update(data)
    elif raw:
        params.update(parse_php_query(raw.decode("utf-8", "replace")))
    return params


def _recorded_body(outcome: _Outcome) -> Any:
    """What a PortalCall keeps of an answer: JSON as data, raw bodies as text."""
    if outcome.drop:
        return None
    if outcome.raw is None:
        return outcome.body
    text = outcome.raw.decode("utf-8", "replace")
    if outcome.content_type.startswith(JSON_CONTENT_TYPE):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text
