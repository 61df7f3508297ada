"""A fake Telegram Bot API server on 127.0.0.1 for end-to-end tests and the demo sandbox.

The real aiogram client talks to it over HTTP::

    async with FakeTelegram() as tg:
        bot = tg.make_bot()                     # or Bot(tg.token, session=AiohttpSession(
                                                #    api=TelegramAPIServer.from_base(tg.base_url)))
        tg.send_message("/start", user_id=42)   # an update the bot will get from getUpdates
        [reply] = await tg.wait_for_messages(1, chat_id=42)

Requests arrive as ``POST {base_url}/bot{token}/{method}`` with an urlencoded, multipart or JSON
body; nested objects (``reply_markup``, ``scope`` ...) arrive as JSON strings and are decoded.
Answers are Bot API envelopes: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": N, "description": "..."}``.

What is checked like Telegram does it: the token, message text (empty, too long, HTML parsed by a
port of TDLib's ``parse_html`` with its exact error texts), inline keyboards (``callback_data``
of 1-64 bytes), edits of unknown or unchanged messages, replies to unknown messages, callback query
ids, bot command lists and long polling (``offset``, ``limit``, ``timeout``, ``allowed_updates``
and the 409 given to a poll that a newer poll replaces). Optionally (``limits=TelegramLimits()``)
Telegram's flood limits too: messages and edits over them get 429 with ``retry_after``.

Deliberate differences: the HTML check is stricter by default (``strict_html``): a bare ``&`` or
``>`` is refused although Telegram lets them through, because they show that some text was not
escaped. Markdown parse modes are accepted unchecked. Text is not scanned for automatic entities
(links, mentions). Not thread-safe: call everything from the event loop that runs the server.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
import math
import re
import time
import types
import typing
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import aiogram.methods as methods
from aiogram import Bot
from aiogram.client.default import Default
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods.base import TelegramMethod
from aiohttp import web
from aiohttp.web_request import FileField

from bot.sandbox.loopback import serve

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Handler = Callable[[JsonDict], Any]
"""A method implementation: takes the decoded params, returns the ``result`` (or an awaitable of
it), raises :class:`ApiError` to answer with an error."""

DEFAULT_TOKEN: Final = "1234:TEST_TOKEN_for_the_fake_bot_api"  # not shaped like a real one
MAX_MESSAGE_LENGTH: Final = 4096
MAX_CALLBACK_DATA_BYTES: Final = 64
MAX_CALLBACK_ANSWER_LENGTH: Final = 200
MAX_UPDATES_LIMIT: Final = 100

NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD: Final = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
POLL_CONFLICT: Final = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running"
)
WEBHOOK_CONFLICT: Final = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)

DEFAULT_UPDATE_TYPES_OFF: Final = frozenset(
    {"chat_member", "message_reaction", "message_reaction_count"}
)
"""Update types Telegram leaves out unless ``allowed_updates`` names them."""

CHAT_ACTIONS: Final = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
BUTTON_ACTIONS: Final = frozenset(
    {
        "url",
        "callback_data",
        "web_app",
        "login_url",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    }
)
SCOPE_TYPES: Final = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)
COMMON_STRING_FIELDS: Final = frozenset(
    {
        "text",
        "parse_mode",
        "caption",
        "callback_query_id",
        "inline_message_id",
        "action",
        "language_code",
        "url",
        "title",
        "description",
        "short_description",
        "name",
        "query",
        "emoji",
        "business_connection_id",
        "message_effect_id",
    }
)
"""Params kept as strings for methods aiogram does not describe (others are JSON-decoded)."""

_HTML_TAGS: Final = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_HTML_ENTITIES: Final = {b"lt": ord("<"), b"gt": ord(">"), b"amp": ord("&"), b"quot": ord('"')}
_TRIM_CHARS: Final = " \t\r\n"
_LINK_SCHEMES: Final = frozenset({"http", "https", "tg", "ton", "tonsite"})
_SCHEME_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_COMMAND_RE: Final = re.compile(r"^[a-z0-9_]+$")
_LANGUAGE_RE: Final = re.compile(r"^(?:[a-z]{2})?$")

FLOOD_LIMITED_METHODS: Final = frozenset(
    {"sendmessage", "editmessagetext", "editmessagereplymarkup"}
)
"""Methods (lower case) that count as messages for :class:`TelegramLimits`."""
EDIT_METHODS: Final = frozenset({"editmessagetext", "editmessagereplymarkup"})


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class ApiCall:
    """One request the bot made: the method as in the URL and its decoded params.

    ``status`` and ``response`` are filled in once the fake has answered (``None`` while a long
    poll is still pending).
    """

    method: str
    params: JsonDict
    status: int | None = None
    response: JsonDict | None = None

    @property
    def ok(self) -> bool:
        """Whether the call was answered with ``"ok": true``."""
        return self.status == 200


@dataclass
class SentMessage:
    """A message the bot sent (``sendMessage``) or a new text it gave one (``editMessageText``).

    ``text`` is the text param exactly as sent (with HTML markup, if any); ``plain_text`` and
    ``entities`` are what Telegram made of it, i.e. what the user sees.
    """

    method: str
    chat_id: int
    message_id: int
    text: str
    parse_mode: str | None
    reply_markup: JsonDict | None
    reply_to_message_id: int | None
    plain_text: str = ""
    entities: list[JsonDict] = field(default_factory=list)

    @property
    def buttons(self) -> list[list[JsonDict]]:
        """The rows of the inline keyboard (empty when there is none)."""
        if not self.reply_markup:
            return []
        rows = self.reply_markup.get("inline_keyboard")
        return rows if isinstance(rows, list) else []

    def button_data(self) -> list[str]:
        """Every ``callback_data`` of the inline keyboard, row by row."""
        return [
            str(button["callback_data"])
            for row in self.buttons
            for button in row
            if isinstance(button, dict) and "callback_data" in button
        ]


class ApiError(Exception):
    """An error answer of the Bot API; custom handlers may raise it too."""

    def __init__(self, status: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def body(self) -> JsonDict:
        """The JSON error envelope Telegram answers with."""
        body: JsonDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


@dataclass(frozen=True)
class TelegramLimits:
    """Telegram's flood limits for bot messages (``sendMessage`` and edits).

    ``per_second_overall``: across all chats, a token bucket holding one second's worth;
    ``per_chat_per_second``: to one chat, a token bucket holding ``chat_burst`` messages;
    ``per_group_per_minute``: to one group (chat id < 0), in any sliding 60 seconds.
    """

    per_second_overall: float = 30
    per_chat_per_second: float = 1
    chat_burst: int = 3
    per_group_per_minute: int = 20

    def __post_init__(self) -> None:
        for name in ("per_second_overall", "per_chat_per_second"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        for name in ("chat_burst", "per_group_per_minute"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


class FakeTelegramTimeout(AssertionError, TimeoutError):
    """``wait_for`` ran out of time; both an assertion failure and a ``TimeoutError``."""


class HtmlParseError(ValueError):
    """Text that Telegram's HTML parse mode refuses; the message is TDLib's."""


@dataclass
class _Fault:
    """A scripted error for the next calls of a method."""

    status: int
    description: str
    retry_after: int | None
    remaining: int
    chat_id: int | None


@dataclass
class _OpenTag:
    """A start tag waiting for its end tag while HTML is parsed."""

    tag: str
    argument: str
    utf16_offset: int
    out_pos: int


class _Signal:
    """Wakes every waiter at once; waiting registers a future of the running loop."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def fire(self) -> None:
        """Wake all current waiters."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, delay: float) -> bool:
        """Wait for the next :meth:`fire`; ``False`` when ``delay`` seconds passed first."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            async with asyncio.timeout(max(delay, 0.0)):
                await waiter
        except TimeoutError:
            return False
        finally:
            self._waiters.discard(waiter)
        return True


class _TokenBucket:
    """``rate`` tokens a second, at most ``capacity``; starts full."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(now - self.updated, 0.0)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = max(now, self.updated)

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0 if one is now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        """Spend a token (may go below zero if called without :meth:`wait`)."""
        self._refill(now)
        self.tokens -= 1


class _FloodControl:
    """The state behind :class:`TelegramLimits`: when may the next message go to a chat."""

    WINDOW: Final = 60.0

    def __init__(self, limits: TelegramLimits) -> None:
        self.limits = limits
        self._overall: _TokenBucket | None = None
        self._chats: dict[int, _TokenBucket] = {}
        self._groups: dict[int, deque[float]] = {}

    def _overall_bucket(self, now: float) -> _TokenBucket:
        if self._overall is None:
            rate = self.limits.per_second_overall
            self._overall = _TokenBucket(rate, max(rate, 1.0), now)
        return self._overall

    def _chat_bucket(self, chat_id: int, now: float) -> _TokenBucket:
        bucket = self._chats.get(chat_id)
        if bucket is None:
            limits = self.limits
            bucket = _TokenBucket(limits.per_chat_per_second, limits.chat_burst, now)
            self._chats[chat_id] = bucket
        return bucket

    def _group_window(self, chat_id: int, now: float) -> deque[float]:
        window = self._groups.setdefault(chat_id, deque())
        while window and window[0] <= now - self.WINDOW:
            window.popleft()
        return window

    def wait(self, chat_id: int | None, now: float) -> float:
        """Seconds until a message to ``chat_id`` (None: no particular chat) is allowed."""
        wait = self._overall_bucket(now).wait(now)
        if chat_id is not None:
            wait = max(wait, self._chat_bucket(chat_id, now).wait(now))
            if chat_id < 0:
                window = self._group_window(chat_id, now)
                limit = self.limits.per_group_per_minute
                if len(window) >= limit:
                    wait = max(wait, window[-limit] + self.WINDOW - now)
        return wait

    def take(self, chat_id: int | None, now: float) -> None:
        """Count an accepted message."""
        self._overall_bucket(now).take(now)
        if chat_id is not None:
            self._chat_bucket(chat_id, now).take(now)
            if chat_id < 0:
                self._group_window(chat_id, now).append(now)


# --------------------------------------------------------------------------------------------
# Telegram HTML (a port of TDLib's parse_html, td/telegram/MessageEntity.cpp)
# --------------------------------------------------------------------------------------------


def _is_space(c: int) -> bool:
    return c in (0x20, 0x09, 0x0D, 0x0A, 0x00, 0x0B)


def _is_alpha(c: int) -> bool:
    return 0x61 <= (c | 0x20) <= 0x7A


def _is_digit(c: int) -> bool:
    return 0x30 <= c <= 0x39


def _is_hex_digit(c: int) -> bool:
    return _is_digit(c) or 0x61 <= (c | 0x20) <= 0x66


def utf16_length(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit of Telegram entity offsets."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _decode_html_entity(data: bytes, pos: int) -> tuple[int, int]:
    """TDLib's ``decode_html_entity``: the code point at ``data[pos] == '&'`` (0 if none) and
    the position after it. ``&lt; &gt; &amp; &quot;`` and numeric references; ``;`` optional."""
    size = len(data)

    def at(i: int) -> int:
        return data[i] if i < size else 0

    end = pos + 1
    code = 0
    if at(pos + 1) == ord("#"):
        end += 1
        if at(pos + 2) == ord("x"):
            end += 1
            while _is_hex_digit(at(end)) and end - pos < 12:
                code = code * 16 + int(chr(at(end)), 16)
                end += 1
        else:
            while _is_digit(at(end)) and end - pos < 12:
                code = code * 10 + at(end) - 0x30
                end += 1
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return 0, pos
    else:
        while _is_alpha(at(end)):
            end += 1
        code = _HTML_ENTITIES.get(data[pos + 1 : end], 0)
        if code == 0:
            return 0, pos
    if at(end) == ord(";"):
        end += 1
    return code, end


def _encode_code_point(code: int) -> bytes:
    return chr(code).encode("utf-8", "surrogatepass")


def _checked_link(url: str) -> str:
    """A simplified ``LinkManager::get_checked_link``: the link to keep, or "" to drop it."""
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        return ""
    match = _SCHEME_RE.match(url)
    if match is None:
        if ":" in url.split("/", 1)[0] and not re.match(r"^[^:/]+:\d+(?:/|$)", url):
            return ""
        return "http://" + url
    return url if match.group(1).lower() in _LINK_SCHEMES else ""


def _add_html_entity(entities: list[JsonDict], tag: _OpenTag, length: int, out: bytearray) -> None:
    """Append the entity a closed tag makes, merging ``<pre><code class=...>`` like TDLib."""
    offset = tag.utf16_offset
    name = tag.tag
    last = entities[-1] if entities else None
    same_span = last is not None and last["offset"] == offset and last["length"] == length
    simple = {
        "i": "italic",
        "em": "italic",
        "b": "bold",
        "strong": "bold",
        "s": "strikethrough",
        "strike": "strikethrough",
        "del": "strikethrough",
        "u": "underline",
        "ins": "underline",
        "tg-spoiler": "spoiler",
        "span": "spoiler",
    }
    if name in simple:
        entities.append({"type": simple[name], "offset": offset, "length": length})
    elif name == "tg-emoji":
        argument = tag.argument
        if not re.fullmatch(r"-?(?:0|[1-9][0-9]*)", argument) or not (
            0 < abs(int(argument)) < 2**63
        ):
            raise HtmlParseError("Invalid custom emoji identifier specified")
        entities.append(
            {
                "type": "custom_emoji",
                "offset": offset,
                "length": length,
                "custom_emoji_id": argument,
            }
        )
    elif name == "a":
        url = tag.argument or bytes(out[tag.out_pos :]).decode("utf-8", "replace")
        url = _checked_link(url)
        if url:
            entities.append({"type": "text_link", "offset": offset, "length": length, "url": url})
    elif name == "pre":
        if last is not None and last["type"] == "code" and same_span and last.get("language"):
            last["type"] = "pre"
        else:
            entities.append({"type": "pre", "offset": offset, "length": length})
    elif name == "code":
        if last is not None and last["type"] == "pre" and same_span and tag.argument:
            last["language"] = tag.argument
        else:
            entity: JsonDict = {"type": "code", "offset": offset, "length": length}
            if tag.argument:
                entity["language"] = tag.argument
            entities.append(entity)
    elif name == "blockquote":
        kind = "expandable_blockquote" if tag.argument else "blockquote"
        entities.append({"type": kind, "offset": offset, "length": length})


def parse_telegram_html(text: str, *, strict: bool = False) -> tuple[str, list[JsonDict]]:
    """Parse Telegram HTML like the Bot API: the plain text and its entities (UTF-16 offsets).

    Raises :class:`HtmlParseError` with TDLib's message (the Bot API prefixes it with
    ``"Bad Request: can't parse entities: "``). With ``strict``, a bare ``&`` that starts no
    character reference and a bare ``>`` are refused too (Telegram keeps them as text).
    """
    data = text.encode("utf-8", "surrogatepass")
    size = len(data)

    def at(i: int) -> int:
        return data[i] if i < size else 0

    out = bytearray()
    entities: list[JsonDict] = []
    nested: list[_OpenTag] = []
    utf16 = 0
    recheck_utf8 = False
    i = 0
    while i < size:
        c = data[i]
        if c == ord("&"):
            code, end = _decode_html_entity(data, i)
            if code:
                utf16 += 2 if code > 0xFFFF else 1
                recheck_utf8 |= 0xD800 <= code <= 0xDFFF
                out += _encode_code_point(code)
                i = end
                continue
            if strict:
                raise HtmlParseError(
                    f'Unescaped "&" at byte offset {i}; write it as "&amp;" '
                    "(the fake Bot API is stricter than Telegram here)"
                )
        if c != ord("<"):
            if strict and c == ord(">"):
                raise HtmlParseError(
                    f'Unescaped ">" at byte offset {i}; write it as "&gt;" '
                    "(the fake Bot API is stricter than Telegram here)"
                )
            if (c & 0xC0) != 0x80:
                utf16 += 2 if c >= 0xF0 else 1
            out.append(c)
            i += 1
            continue

        begin = i
        i += 1
        if at(i) != ord("/"):
            # a start tag
            while not _is_space(at(i)) and at(i) != ord(">"):
                i += 1
            if at(i) == 0:
                raise HtmlParseError(f"Unclosed start tag at byte offset {begin}")
            tag = data[begin + 1 : i].lower().decode("utf-8", "replace")
            if tag not in _HTML_TAGS:
                raise HtmlParseError(f'Unsupported start tag "{tag}" at byte offset {begin}')
            argument = ""
            while at(i) != ord(">"):
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                if at(i) == ord(">"):
                    break
                attribute_begin = i
                while not _is_space(at(i)) and at(i) not in b"=>/\"'":
                    i += 1
                attribute = data[attribute_begin:i]
                if not attribute:
                    raise HtmlParseError(
                        f'Empty attribute name in the tag "{tag}" at byte offset {begin}'
                    )
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                if at(i) != ord("="):
                    if at(i) == 0:
                        raise HtmlParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                    if tag == "blockquote" and attribute == b"expandable":
                        argument = "1"
                    continue
                i += 1
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                if at(i) == 0:
                    raise HtmlParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                if at(i) not in b"'\"":
                    # a name token: letters, digits, periods and hyphens; case-insensitive
                    token_begin = i
                    while _is_alpha(at(i)) or _is_digit(at(i)) or at(i) in b".-":
                        i += 1
                    value = data[token_begin:i].lower()
                    if not _is_space(at(i)) and at(i) != ord(">"):
                        raise HtmlParseError(
                            f"Unexpected end of name token at byte offset {token_begin}"
                        )
                else:
                    quote = at(i)
                    i += 1
                    raw = bytearray()
                    while at(i) != quote and at(i) != 0:
                        if at(i) == ord("&"):
                            code, end = _decode_html_entity(data, i)
                            if code:
                                raw += _encode_code_point(code)
                                i = end
                                continue
                        raw.append(at(i))
                        i += 1
                    if at(i) == quote:
                        i += 1
                    value = bytes(raw)
                if at(i) == 0:
                    raise HtmlParseError(f"Unclosed start tag at byte offset {begin}")
                decoded = value.decode("utf-8", "replace")
                if (tag == "a" and attribute == b"href") or (
                    tag == "tg-emoji" and attribute == b"emoji-id"
                ):
                    argument = decoded
                elif tag == "code" and attribute == b"class" and decoded.startswith("language-"):
                    argument = decoded[9:]
                elif tag == "span" and attribute == b"class" and decoded.startswith("tg-"):
                    argument = decoded[3:]
                elif tag == "blockquote" and attribute == b"expandable":
                    argument = "1"
            if tag == "span" and argument != "spoiler":
                raise HtmlParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {begin}'
                )
            nested.append(_OpenTag(tag, argument, utf16, len(out)))
            i += 1
            continue

        # an end tag
        if not nested:
            raise HtmlParseError(f"Unexpected end tag at byte offset {begin}")
        while not _is_space(at(i)) and at(i) != ord(">"):
            i += 1
        end_tag = data[begin + 2 : i].lower().decode("utf-8", "replace")
        while _is_space(at(i)) and at(i) != 0:
            i += 1
        if at(i) != ord(">"):
            raise HtmlParseError(f"Unclosed end tag at byte offset {begin}")
        open_tag = nested[-1]
        if end_tag and end_tag != open_tag.tag:
            raise HtmlParseError(
                f"Unmatched end tag at byte offset {begin}, "
                f'expected "</{open_tag.tag}>", found "</{end_tag}>"'
            )
        if utf16 > open_tag.utf16_offset:
            _add_html_entity(entities, open_tag, utf16 - open_tag.utf16_offset, out)
        nested.pop()
        i += 1

    if nested:
        raise HtmlParseError(f'Can\'t find end tag corresponding to start tag "{nested[-1].tag}"')
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    try:
        plain = (
            bytes(out).decode("utf-8") if recheck_utf8 else bytes(out).decode("utf-8", "replace")
        )
    except UnicodeDecodeError:
        raise HtmlParseError(
            "Text contains invalid Unicode characters after decoding HTML entities, "
            "check for unmatched surrogate code units"
        ) from None
    return plain, entities


def _trim(text: str, entities: list[JsonDict]) -> tuple[str, list[JsonDict]]:
    """Strip leading/trailing whitespace as Telegram does, moving and clipping the entities."""
    left = text.lstrip(_TRIM_CHARS)
    core = left.rstrip(_TRIM_CHARS)
    if core == text:
        return text, entities
    shift = utf16_length(text[: len(text) - len(left)])
    limit = utf16_length(core)
    trimmed: list[JsonDict] = []
    for entity in entities:
        start = max(int(entity["offset"]) - shift, 0)
        end = min(int(entity["offset"]) + int(entity["length"]) - shift, limit)
        if end > start:
            trimmed.append({**entity, "offset": start, "length": end - start})
    return core, trimmed


# --------------------------------------------------------------------------------------------
# Param decoding
# --------------------------------------------------------------------------------------------


def _flatten_annotation(annotation: Any) -> Iterable[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _flatten_annotation(arg)
    elif origin is typing.Annotated:
        yield from _flatten_annotation(typing.get_args(annotation)[0])
    else:
        yield annotation


def _collect_string_fields() -> dict[str, frozenset[str]]:
    """For every Bot API method aiogram knows: the params that are plain strings."""
    result: dict[str, frozenset[str]] = {}
    for name in methods.__all__:
        cls = getattr(methods, name, None)
        if not (isinstance(cls, type) and issubclass(cls, TelegramMethod)):
            continue
        api_method = getattr(cls, "__api_method__", None)
        if not isinstance(api_method, str):
            continue
        strings = set()
        for field_name, info in cls.model_fields.items():
            kinds = {
                kind
                for kind in _flatten_annotation(info.annotation)
                if kind not in (type(None), Default)
            }
            if kinds == {str}:
                strings.add(info.alias or field_name)
        result[api_method.lower()] = frozenset(strings)
    return result


def _decode_value(value: Any, keep_string: bool) -> Any:
    """A form value as the Bot API reads it: JSON unless the param is a plain string."""
    if keep_string or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _as_int(value: Any, name: str, *, default: int | None = None) -> int:
    """An integer param; ``default`` when absent, else 400 like the Bot API."""
    if value is None or value == "":
        if default is None:
            raise ApiError(400, f"Bad Request: {name} is empty")
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ApiError(400, f"Bad Request: invalid {name} specified")


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class LocalAiohttpSession(AiohttpSession):
    """aiogram's ``AiohttpSession`` minus the 250 ms pause ``close()`` makes for TLS shutdown,
    which plain HTTP to 127.0.0.1 does not need (it keeps test teardown fast)."""

    async def close(self) -> None:
        """Close the aiohttp client session at once."""
        if self._session is not None and not self._session.closed:
            await self._session.close()


class FakeTelegram:
    """A fake Telegram Bot API server: inject updates, watch what the bot does, inject faults.

    State is kept per chat (messages of both sides, so edits and replies work). Everything is
    in memory and belongs to this instance.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_id: int | None = None,
        bot_username: str = "handoff_test_bot",
        bot_name: str = "Handoff bot",
        strict_html: bool = True,
        known_chats_only: bool = False,
        limits: TelegramLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``bot_id`` defaults to the token's number, as on Telegram; ``strict_html`` also
        refuses a bare ``&``/``>`` in HTML text; ``known_chats_only`` answers "chat not
        found" for chats nobody wrote from (see :meth:`add_chat`). ``limits`` enforces flood
        limits (None: none), timed by ``clock`` in seconds (used only by the limits and
        :attr:`message_times`)."""
        self.token = token
        prefix = token.split(":", 1)[0]
        self.bot_id = bot_id if bot_id is not None else int(prefix) if prefix.isdigit() else 1
        self.bot_username = bot_username
        self.bot_name = bot_name
        self.strict_html = strict_html
        self.known_chats_only = known_chats_only
        self.limits = limits
        self.clock = clock

        self.calls: list[ApiCall] = []
        self.sent: list[SentMessage] = []
        self.callback_answers: list[JsonDict] = []
        self.on_message: Callable[[SentMessage], None] | None = None
        """Called with every :class:`SentMessage` as it is recorded (the demo console prints)."""
        self.on_call: Callable[[ApiCall], None] | None = None
        """Called with every :class:`ApiCall` once it is answered."""
        self.messages_sent = 0
        """Accepted ``sendMessage`` calls."""
        self.edits = 0
        """Accepted ``editMessageText`` / ``editMessageReplyMarkup`` calls."""
        self.flood_refusals = 0
        """429s given by :attr:`limits` (not those scripted with :meth:`fail`)."""
        self.message_times: dict[int, list[float]] = {}
        """Per chat, the ``clock`` times of accepted sends and edits."""
        self._flood = _FloodControl(limits) if limits is not None else None

        self._handlers: dict[str, Handler] = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "answercallbackquery": self._answer_callback_query,
            "deletemessage": self._delete_message,
            "deletemessages": self._delete_messages,
            "sendchataction": self._send_chat_action,
            "getchat": self._get_chat,
        }
        self._string_fields: dict[str, frozenset[str]] | None = None
        self._faults: dict[str, list[_Fault]] = {}

        self._updates: list[JsonDict] = []
        self._next_update_id = 1
        self._allowed_updates: frozenset[str] | None = None
        self._webhook_url = ""
        self._poll_owner: object | None = None

        self._users: dict[int, JsonDict] = {}
        self._chats: dict[int, JsonDict] = {}
        self._messages: dict[int, dict[int, JsonDict]] = {}
        self._next_message_id: dict[int, int] = {}
        self._commands: dict[tuple[str, str], list[JsonDict]] = {}
        self._open_queries: dict[str, JsonDict] = {}
        self._next_query_id = 1

        self._updates_signal = _Signal()
        self._activity = _Signal()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._closing = False

    # ---------------------------------------------------------------- server lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 picks a free port); returns the base url."""
        if self._runner is not None:
            raise RuntimeError("the fake Telegram server is already running")
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # a long poll whose client went away must not linger
        self._runner, self._base_url = await serve(app, host, port, cancel_on_disconnect=True)
        self._closing = False
        log.debug("fake Telegram Bot API at %s", self._base_url)
        return self._base_url

    async def close(self) -> None:
        """Stop serving; pending long polls are answered at once, so this never hangs."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        self._updates_signal.fire()
        try:
            await runner.cleanup()
        finally:
            self._base_url = None
            self._activity.fire()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        if self._base_url is None:
            raise RuntimeError("the fake Telegram server is not running; await start() first")
        return self._base_url

    @property
    def api_server(self) -> TelegramAPIServer:
        """The aiogram endpoint config pointing at this fake."""
        return TelegramAPIServer.from_base(self.base_url)

    def make_session(self, **kwargs: Any) -> AiohttpSession:
        """An aiogram ``AiohttpSession`` talking to this fake (one that closes without the
        TLS grace pause, see :class:`LocalAiohttpSession`)."""
        return LocalAiohttpSession(api=self.api_server, **kwargs)

    def make_bot(self, **kwargs: Any) -> Bot:
        """A real aiogram ``Bot`` with this fake's token and a session pointing at it."""
        return Bot(self.token, session=self.make_session(), **kwargs)

    @property
    def bot_user(self) -> JsonDict:
        """The bot as a Telegram ``User`` object."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_name,
            "username": self.bot_username,
        }

    # ---------------------------------------------------------------- injecting updates

    def add_update(self, update: JsonDict) -> int:
        """Queue a raw update for ``getUpdates``; ``update_id`` is filled in when missing."""
        update = copy.deepcopy(update)
        update_id = update.get("update_id")
        if update_id is None:
            update_id = self._next_update_id
            update["update_id"] = update_id
        elif not isinstance(update_id, int):
            raise ValueError(f"update_id must be an int, got {update_id!r}")
        self._next_update_id = max(self._next_update_id, update_id + 1)
        self._updates.append(update)
        self._updates.sort(key=lambda u: int(u["update_id"]))
        self._updates_signal.fire()
        self._activity.fire()
        return int(update_id)

    def add_user(
        self,
        user_id: int,
        *,
        first_name: str = "Olga",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
    ) -> JsonDict:
        """Make (or update) a user; returns the ``User`` object."""
        if user_id <= 0:
            raise ValueError(f"a user id is positive, got {user_id}")
        user: JsonDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name is not None:
            user["last_name"] = last_name
        if username is not None:
            user["username"] = username
        if language_code is not None:
            user["language_code"] = language_code
        self._users[user_id] = user
        private = self._chats.get(user_id)
        if private is not None:
            self._chats[user_id] = self._private_chat(user)
        return copy.deepcopy(user)

    def add_chat(
        self,
        chat_id: int,
        *,
        chat_type: str | None = None,
        title: str | None = None,
        first_name: str | None = None,
        username: str | None = None,
    ) -> JsonDict:
        """Make (or update) a chat the bot may write to; returns the ``Chat`` object.

        A positive id is a private chat (its user is created if unknown), a negative one a
        supergroup unless ``chat_type`` says ``group``.
        """
        kind = chat_type or ("private" if chat_id > 0 else "supergroup")
        if kind == "private":
            if chat_id <= 0:
                raise ValueError(f"a private chat has the user's (positive) id, got {chat_id}")
            user = self._users.get(chat_id)
            if user is None or first_name is not None or username is not None:
                old = user or {}
                self.add_user(
                    chat_id,
                    first_name=first_name or str(old.get("first_name", "User")),
                    last_name=old.get("last_name"),
                    username=username or old.get("username"),
                    language_code=old.get("language_code", "en"),
                )
            chat = self._private_chat(self._users[chat_id])
        elif kind in ("group", "supergroup", "channel"):
            if chat_id >= 0:
                raise ValueError(f"a {kind} has a negative id, got {chat_id}")
            old_chat = self._chats.get(chat_id, {})
            chat = {
                "id": chat_id,
                "type": kind,
                "title": title or old_chat.get("title") or "Test group",
            }
            if username or old_chat.get("username"):
                chat["username"] = username or old_chat["username"]
        else:
            raise ValueError(f"unknown chat type {kind!r}")
        self._chats[chat_id] = chat
        return copy.deepcopy(chat)

    def send_message(
        self,
        text: str,
        *,
        user_id: int,
        chat_id: int | None = None,
        chat_type: str | None = None,
        first_name: str = "Olga",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        reply_to_message_id: int | None = None,
        chat_title: str | None = None,
    ) -> JsonDict:
        """A user writes ``text``; returns the ``Message`` as put in the update.

        ``chat_id`` None is the private chat with the user. ``chat_type`` defaults to what the
        chat already is, else "private" for a positive id and "supergroup" for a negative one.
        ``reply_to_message_id`` names a message the fake holds in that chat.
        """
        if not text:
            raise ValueError("Telegram users cannot send an empty text message")
        user = self.add_user(
            user_id,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
        )
        target = user_id if chat_id is None else chat_id
        known = self._chats.get(target)
        kind = chat_type or (known["type"] if known else None)
        if (kind or ("private" if target > 0 else "supergroup")) == "private" and target != user_id:
            raise ValueError(f"a private chat's id is its user's id: {target} != {user_id}")
        chat = self.add_chat(target, chat_type=kind, title=chat_title)
        message: JsonDict = {
            "message_id": self._take_message_id(target),
            "from": user,
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": utf16_length(command)}
            ]
        if reply_to_message_id is not None:
            replied = self._messages.get(target, {}).get(reply_to_message_id)
            if replied is None:
                raise ValueError(f"no message {reply_to_message_id} in chat {target} to reply to")
            message["reply_to_message"] = self._without_reply(replied)
        self._store(message)
        self.add_update({"message": message})
        return copy.deepcopy(message)

    def press_button(
        self,
        message_id: int,
        data: str,
        *,
        user_id: int,
        chat_id: int | None = None,
        first_name: str = "Olga",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        check_button: bool = True,
    ) -> str:
        """A user presses an inline button of a bot message; returns the callback query id.

        ``chat_id`` None is the private chat with the user. With ``check_button`` the message's
        current keyboard must have a button with this ``callback_data``.
        """
        target = user_id if chat_id is None else chat_id
        message = self._messages.get(target, {}).get(message_id)
        if message is None:
            raise ValueError(f"no message {message_id} in chat {target}")
        if message.get("from", {}).get("id") != self.bot_id:
            raise ValueError(f"message {message_id} in chat {target} was not sent by the bot")
        if check_button:
            rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
            datas = [b.get("callback_data") for row in rows for b in row if isinstance(b, dict)]
            if data not in datas:
                raise ValueError(
                    f"message {message_id} in chat {target} has no button with callback_data "
                    f"{data!r}; it has {[d for d in datas if d is not None]!r}"
                )
        user = self.add_user(
            user_id,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
        )
        query_id = str(4_200_000_000_000_000_000 + self._next_query_id)
        self._next_query_id += 1
        query: JsonDict = {
            "id": query_id,
            "from": user,
            "message": copy.deepcopy(message),
            "chat_instance": str(abs(target) * 7919 + 104729),
            "data": data,
        }
        self._open_queries[query_id] = query
        self.add_update({"callback_query": query})
        return query_id

    # ---------------------------------------------------------------- observing the bot

    def messages_to(self, chat_id: int) -> list[SentMessage]:
        """Everything recorded in :attr:`sent` for ``chat_id`` (sends and text edits)."""
        return [m for m in self.sent if m.chat_id == chat_id]

    def calls_to(self, method: str) -> list[ApiCall]:
        """The recorded calls of ``method`` (case-insensitive)."""
        wanted = method.lower()
        return [c for c in self.calls if c.method.lower() == wanted]

    def get_message(self, chat_id: int, message_id: int) -> JsonDict | None:
        """The current state of a message in a chat (after edits), or None."""
        message = self._messages.get(chat_id, {}).get(message_id)
        return copy.deepcopy(message) if message is not None else None

    def get_commands(
        self, scope: JsonDict | None = None, language_code: str = ""
    ) -> list[JsonDict]:
        """The command list the bot set for a scope (default scope) and language."""
        key = (self._scope_key(scope or {"type": "default"}), language_code)
        return copy.deepcopy(self._commands.get(key, []))

    @property
    def pending_updates(self) -> int:
        """Updates not yet confirmed by a ``getUpdates`` offset."""
        return len(self._updates)

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline, not an I/O timeout
        *,
        interval: float | None = None,
    ) -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever the bot calls the API or
        an update is injected (and every ``interval`` seconds, if given, for predicates on state
        outside the fake). Raises :class:`FakeTelegramTimeout` describing what the bot did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise FakeTelegramTimeout(
                    f"condition not met within {timeout:g}s\n{self.describe()}"
                )
            await self._activity.wait(remaining if interval is None else min(remaining, interval))

    async def wait_for_messages(
        self,
        count: int,
        *,
        chat_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline, not an I/O timeout
    ) -> list[SentMessage]:
        """Wait until :attr:`sent` (or ``messages_to(chat_id)``) holds ``count`` entries;
        returns the first ``count`` of them."""

        def matching() -> list[SentMessage]:
            return self.sent if chat_id is None else self.messages_to(chat_id)

        where = "" if chat_id is None else f" to chat {chat_id}"
        try:
            await self.wait_for(lambda: len(matching()) >= count, timeout)
        except FakeTelegramTimeout:
            raise FakeTelegramTimeout(
                f"expected {count} message(s){where} within {timeout:g}s, "
                f"got {len(matching())}\n{self.describe()}"
            ) from None
        return matching()[:count]

    def describe(self, limit: int = 20) -> str:
        """A readable summary of what the bot sent and which calls failed (for failures)."""
        lines = [f"sent so far ({len(self.sent)}):"]
        for m in self.sent[-limit:]:
            keyboard = f" buttons={m.button_data()}" if m.button_data() else ""
            lines.append(f"  chat {m.chat_id} #{m.message_id} {m.method}: {m.text!r}{keyboard}")
        failed = [c for c in self.calls if c.status is not None and not c.ok]
        if failed:
            lines.append(f"failed calls ({len(failed)}):")
            for call in failed[-limit:]:
                description = (call.response or {}).get("description")
                lines.append(f"  {call.method} -> {call.status} {description}: {call.params}")
        counts: dict[str, int] = {}
        for call in self.calls:
            counts[call.method] = counts.get(call.method, 0) + 1
        lines.append(f"calls: {counts or 'none'}; pending updates: {self.pending_updates}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- extending and faults

    def register(self, method: str, handler: Handler) -> None:
        """Implement (or replace) a Bot API method; ``handler`` gets the decoded params."""
        self._handlers[method.lower()] = handler

    def fail(
        self,
        method: str,
        *,
        status: int,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        chat_id: int | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (to ``chat_id``, if given) with an error.

        429 carries ``parameters.retry_after`` (1 unless given); a default description is made
        from the status when none is given.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if status == 429:
            retry_after = 1 if retry_after is None else retry_after
        elif retry_after is not None:
            raise ValueError("retry_after goes with status 429 only")
        if description is None:
            description = {
                400: "Bad Request",
                401: "Unauthorized",
                403: "Forbidden: bot was blocked by the user",
                404: "Not Found",
                409: "Conflict",
                429: f"Too Many Requests: retry after {retry_after}",
                500: "Internal Server Error",
                502: "Bad Gateway",
            }.get(status, f"Error {status}")
        self._faults.setdefault(method.lower(), []).append(
            _Fault(status, description, retry_after, times, chat_id)
        )

    def _take_fault(self, method: str, params: JsonDict) -> _Fault | None:
        faults = self._faults.get(method.lower())
        if not faults:
            return None
        for fault in faults:
            if fault.chat_id is not None:
                try:
                    if _as_int(params.get("chat_id"), "chat_id") != fault.chat_id:
                        continue
                except ApiError:
                    continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                faults.remove(fault)
            return fault
        return None

    # ---------------------------------------------------------------- HTTP

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response(ApiError(404, "Not Found").body(), status=404)

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        call = ApiCall(method, {})
        self.calls.append(call)
        try:
            call.params = await self._read_params(request, method)
            self._activity.fire()
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            fault = self._take_fault(method, call.params)
            if fault is not None:
                raise ApiError(fault.status, fault.description, retry_after=fault.retry_after)
            handler = self._handlers.get(method.lower())
            if handler is None:
                raise ApiError(404, "Not Found")
            counted = method.lower() in FLOOD_LIMITED_METHODS
            if counted:
                self._check_flood(call.params)
            result = handler(call.params)
            if inspect.isawaitable(result):
                result = await result
            call.status, call.response = 200, {"ok": True, "result": result}
            if counted:
                self._count_message(method, call.params)
        except ApiError as error:
            call.status, call.response = error.status, error.body()
        except asyncio.CancelledError:
            call.status, call.response = 499, {"ok": False, "description": "client went away"}
            raise
        except Exception as error:
            log.exception("fake Telegram: %s failed", method)
            call.status = 500
            call.response = ApiError(500, f"Internal Server Error: {error!r}").body()
        finally:
            self._after_call(call)
        return web.json_response(call.response, status=call.status)

    def _flood_chat_id(self, params: JsonDict) -> int | None:
        """The chat a counted call writes to, found without side effects (None if unclear)."""
        value = params.get("chat_id")
        if isinstance(value, str) and value.startswith("@"):
            for chat in self._chats.values():
                if str(chat.get("username", "")).lower() == value[1:].lower():
                    return int(chat["id"])
            return None
        try:
            return _as_int(value, "chat_id") or None
        except ApiError:
            return None

    def _check_flood(self, params: JsonDict) -> None:
        """Refuse a message over :attr:`limits` with Telegram's 429."""
        if self._flood is None:
            return
        wait = self._flood.wait(self._flood_chat_id(params), self.clock())
        if wait > 0:
            self.flood_refusals += 1
            retry_after = max(1, math.ceil(wait - 1e-9))
            raise ApiError(
                429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
            )

    def _count_message(self, method: str, params: JsonDict) -> None:
        """Count an accepted send or edit."""
        if method.lower() in EDIT_METHODS:
            self.edits += 1
        else:
            self.messages_sent += 1
        chat_id = self._flood_chat_id(params)
        now = self.clock()
        if chat_id is not None:
            self.message_times.setdefault(chat_id, []).append(now)
        if self._flood is not None:
            self._flood.take(chat_id, now)

    def _after_call(self, call: ApiCall) -> None:
        self._activity.fire()
        if self.on_call is not None:
            try:
                self.on_call(call)
            except Exception:
                log.exception("fake Telegram: on_call hook failed")

    async def _read_params(self, request: web.Request, method: str) -> JsonDict:
        raw: JsonDict = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise ApiError(400, "Bad Request: can't parse JSON encoded request") from None
                if isinstance(body, dict):
                    raw.update(body)
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, FileField):
                        raw[key] = {
                            "filename": value.filename,
                            "content_type": value.content_type,
                            "data": value.file.read(),
                        }
                    else:
                        raw[key] = value
        if self._string_fields is None:
            self._string_fields = _collect_string_fields()
        strings = self._string_fields.get(method.lower(), COMMON_STRING_FIELDS)
        return {key: _decode_value(value, key in strings) for key, value in raw.items()}

    # ---------------------------------------------------------------- state helpers

    @staticmethod
    def _private_chat(user: JsonDict) -> JsonDict:
        chat: JsonDict = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        for key in ("last_name", "username"):
            if key in user:
                chat[key] = user[key]
        return chat

    def _take_message_id(self, chat_id: int) -> int:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        return message_id

    def _store(self, message: JsonDict) -> None:
        chat_id = int(message["chat"]["id"])
        self._messages.setdefault(chat_id, {})[int(message["message_id"])] = copy.deepcopy(message)

    @staticmethod
    def _without_reply(message: JsonDict) -> JsonDict:
        result = copy.deepcopy(message)
        result.pop("reply_to_message", None)
        return result

    def _record(self, sent: SentMessage) -> None:
        self.sent.append(sent)
        if self.on_message is not None:
            try:
                self.on_message(sent)
            except Exception:
                log.exception("fake Telegram: on_message hook failed")

    def _resolve_chat(self, value: Any) -> JsonDict:
        """The chat a ``chat_id`` param names, or 400 "chat not found"."""
        if value is None or value == "":
            raise ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(value, str) and value.startswith("@"):
            for chat in self._chats.values():
                if str(chat.get("username", "")).lower() == value[1:].lower():
                    return chat
            raise ApiError(400, "Bad Request: chat not found")
        try:
            chat_id = _as_int(value, "chat_id")
        except ApiError:
            raise ApiError(400, "Bad Request: chat not found") from None
        known = self._chats.get(chat_id)
        if known is not None:
            return known
        if self.known_chats_only or chat_id == 0:
            raise ApiError(400, "Bad Request: chat not found")
        self.add_chat(chat_id)
        return self._chats[chat_id]

    def _formatted(self, params: JsonDict) -> tuple[str, str, list[JsonDict]]:
        """Raw text, plain text and entities of a text param, validated like the Bot API."""
        raw = params.get("text")
        text = "" if raw is None else str(raw)
        if not text:
            raise ApiError(400, "Bad Request: message text is empty")
        parse_mode = str(params.get("parse_mode") or "").lower()
        entities: list[JsonDict] = []
        if parse_mode == "html":
            try:
                plain, entities = parse_telegram_html(text, strict=self.strict_html)
            except HtmlParseError as error:
                raise ApiError(400, f"Bad Request: can't parse entities: {error}") from None
        elif parse_mode in ("", "none", "markdown", "markdownv2"):
            plain = text
            given = params.get("entities")
            if not parse_mode and isinstance(given, list):
                entities = [e for e in given if isinstance(e, dict)]
        else:
            raise ApiError(400, "Bad Request: unsupported parse_mode")
        plain, entities = _trim(plain, entities)
        if not plain:
            raise ApiError(400, "Bad Request: message must be non-empty")
        if len(plain) > MAX_MESSAGE_LENGTH:
            raise ApiError(400, "Bad Request: message is too long")
        return text, plain, entities

    @staticmethod
    def _reply_markup(params: JsonDict) -> JsonDict | None:
        """The decoded ``reply_markup``, with inline keyboards checked like Telegram does."""
        markup = params.get("reply_markup")
        if markup is None or markup == "":
            return None
        if not isinstance(markup, dict):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return markup
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise ApiError(400, 'Bad Request: field "inline_keyboard" must be an Array of Array')
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                    raise ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: "
                        'Field "text" must be of type String',
                    )
                if not BUTTON_ACTIONS & button.keys():
                    raise ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: "
                        "Text buttons are unallowed in the inline keyboard",
                    )
                if "callback_data" in button:
                    data = str(button["callback_data"]).encode("utf-8")
                    if not 1 <= len(data) <= MAX_CALLBACK_DATA_BYTES:
                        raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup

    def _bot_message(self, params: JsonDict, *, action: str) -> JsonDict:
        """The stored bot message an edit/delete names (``chat_id`` + ``message_id``)."""
        if params.get("inline_message_id"):
            raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        chat = self._resolve_chat(params.get("chat_id"))
        message_id = _as_int(params.get("message_id"), "message_id")
        message = self._messages.get(int(chat["id"]), {}).get(message_id)
        if message is None:
            raise ApiError(400, f"Bad Request: message to {action} not found")
        return message

    def _scope_key(self, scope: Any) -> str:
        if scope is None or scope == "":
            scope = {"type": "default"}
        if not isinstance(scope, dict):
            raise ApiError(400, "Bad Request: can't parse BotCommandScope JSON object")
        kind = scope.get("type")
        if kind not in SCOPE_TYPES:
            raise ApiError(400, "Bad Request: unsupported bot command scope type")
        key: JsonDict = {"type": kind}
        if kind in ("chat", "chat_administrators", "chat_member"):
            key["chat_id"] = self._resolve_chat(scope.get("chat_id"))["id"]
        if kind == "chat_member":
            key["user_id"] = _as_int(scope.get("user_id"), "user_id")
        return _canonical(key)

    def _commands_key(self, params: JsonDict) -> tuple[str, str]:
        language = str(params.get("language_code") or "")
        if not _LANGUAGE_RE.match(language):
            raise ApiError(400, "Bad Request: invalid language code specified")
        return self._scope_key(params.get("scope")), language

    # ---------------------------------------------------------------- Bot API methods

    def _get_me(self, params: JsonDict) -> JsonDict:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: JsonDict) -> list[JsonDict]:
        if self._webhook_url:
            raise ApiError(409, WEBHOOK_CONFLICT)
        offset = _as_int(params.get("offset"), "offset", default=0)
        limit = min(max(_as_int(params.get("limit"), "limit", default=100), 1), MAX_UPDATES_LIMIT)
        timeout = max(_as_int(params.get("timeout"), "timeout", default=0), 0)
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(str(kind) for kind in allowed) or None
        if offset > 0:
            self._updates = [u for u in self._updates if int(u["update_id"]) >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]

        owner = object()
        if self._poll_owner is not None:
            self._updates_signal.fire()  # the older poll wakes up and answers 409
        self._poll_owner = owner
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                if self._closing:
                    return []
                if self._poll_owner is not owner:
                    raise ApiError(409, POLL_CONFLICT)
                batch = self._deliverable(limit)
                remaining = deadline - loop.time()
                if batch or remaining <= 0:
                    return batch
                await self._updates_signal.wait(remaining)
        finally:
            if self._poll_owner is owner:
                self._poll_owner = None

    def _deliverable(self, limit: int) -> list[JsonDict]:
        """Up to ``limit`` pending updates; those of types not allowed are dropped."""

        def allowed(update: JsonDict) -> bool:
            kinds = set(update) - {"update_id"}
            if self._allowed_updates is None:
                return not kinds <= DEFAULT_UPDATE_TYPES_OFF
            return bool(kinds & self._allowed_updates)

        self._updates = [u for u in self._updates if allowed(u)]
        return copy.deepcopy(self._updates[:limit])

    def _set_webhook(self, params: JsonDict) -> bool:
        url = str(params.get("url") or "")
        self._webhook_url = url
        if _as_bool(params.get("drop_pending_updates")):
            self._updates.clear()
        return True

    def _delete_webhook(self, params: JsonDict) -> bool:
        self._webhook_url = ""
        if _as_bool(params.get("drop_pending_updates")):
            self._updates.clear()
        return True

    def _get_webhook_info(self, params: JsonDict) -> JsonDict:
        return {
            "url": self._webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }

    def _set_my_commands(self, params: JsonDict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        if len(commands) > MAX_UPDATES_LIMIT:
            raise ApiError(400, "Bad Request: too many commands specified")
        cleaned: list[JsonDict] = []
        for item in commands:
            if not isinstance(item, dict):
                raise ApiError(400, "Bad Request: can't parse BotCommand JSON object")
            command = str(item.get("command") or "").strip(_TRIM_CHARS)
            command = command.removeprefix("/")
            description = str(item.get("description") or "").strip(_TRIM_CHARS)
            if not command:
                raise ApiError(400, "Bad Request: command must be non-empty")
            if len(command) > 32:
                raise ApiError(400, "Bad Request: command length must not exceed 32")
            if not description:
                raise ApiError(400, "Bad Request: command description must be non-empty")
            if len(description) > 256:
                raise ApiError(400, "Bad Request: command description length must not exceed 256")
            if not _COMMAND_RE.match(command):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            cleaned.append({"command": command, "description": description})
        key = self._commands_key(params)
        if cleaned:
            self._commands[key] = cleaned
        else:
            self._commands.pop(key, None)
        return True

    def _get_my_commands(self, params: JsonDict) -> list[JsonDict]:
        return copy.deepcopy(self._commands.get(self._commands_key(params), []))

    def _delete_my_commands(self, params: JsonDict) -> bool:
        self._commands.pop(self._commands_key(params), None)
        return True

    def _send_message(self, params: JsonDict) -> JsonDict:
        if params.get("chat_id") in (None, ""):
            raise ApiError(400, "Bad Request: chat_id is empty")
        text, plain, entities = self._formatted(params)
        markup = self._reply_markup(params)
        chat = self._resolve_chat(params.get("chat_id"))
        chat_id = int(chat["id"])

        reply = params.get("reply_parameters")
        reply_id: int | None = None
        allow_without = _as_bool(params.get("allow_sending_without_reply"))
        reply_chat_id = chat_id
        if isinstance(reply, dict):
            reply_id = _as_int(reply.get("message_id"), "message_id")
            allow_without = allow_without or _as_bool(reply.get("allow_sending_without_reply"))
            if reply.get("chat_id") not in (None, ""):
                reply_chat_id = int(self._resolve_chat(reply.get("chat_id"))["id"])
        elif reply not in (None, ""):
            raise ApiError(400, "Bad Request: can't parse reply parameters JSON object")
        elif params.get("reply_to_message_id") not in (None, ""):
            reply_id = _as_int(params.get("reply_to_message_id"), "reply_to_message_id")
        replied = None
        if reply_id is not None:
            replied = self._messages.get(reply_chat_id, {}).get(reply_id)
            if replied is None:
                if not allow_without:
                    raise ApiError(400, "Bad Request: message to be replied not found")
                reply_id = None

        message: JsonDict = {
            "message_id": self._take_message_id(chat_id),
            "from": self.bot_user,
            "chat": copy.deepcopy(chat),
            "date": int(time.time()),
        }
        if params.get("message_thread_id") not in (None, ""):
            message["message_thread_id"] = _as_int(params["message_thread_id"], "message_thread_id")
        if replied is not None and reply_chat_id == chat_id:
            message["reply_to_message"] = self._without_reply(replied)
        message["text"] = plain
        if entities:
            message["entities"] = entities
        if markup is not None and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        self._store(message)
        parse_mode = params.get("parse_mode")
        self._record(
            SentMessage(
                method="sendMessage",
                chat_id=chat_id,
                message_id=int(message["message_id"]),
                text=text,
                parse_mode=str(parse_mode) if parse_mode else None,
                reply_markup=copy.deepcopy(markup),
                reply_to_message_id=reply_id,
                plain_text=plain,
                entities=copy.deepcopy(entities),
            )
        )
        return copy.deepcopy(message)

    def _edited(
        self, message: JsonDict, plain: str, entities: list[JsonDict], markup: JsonDict | None
    ) -> JsonDict:
        """Apply an edit to a stored message, or 400 "message is not modified"."""
        if message.get("from", {}).get("id") != self.bot_id:
            raise ApiError(400, "Bad Request: message can't be edited")
        inline = markup if markup is not None and "inline_keyboard" in markup else None
        unchanged = (
            message.get("text") == plain
            and _canonical(message.get("entities") or []) == _canonical(entities)
            and _canonical(message.get("reply_markup")) == _canonical(inline)
        )
        if unchanged:
            raise ApiError(400, NOT_MODIFIED)
        message["text"] = plain
        message.pop("entities", None)
        if entities:
            message["entities"] = copy.deepcopy(entities)
        message.pop("reply_markup", None)
        if inline is not None:
            message["reply_markup"] = copy.deepcopy(inline)
        message["edit_date"] = int(time.time())
        return message

    def _edit_message_text(self, params: JsonDict) -> JsonDict:
        text, plain, entities = self._formatted(params)
        markup = self._reply_markup(params)
        message = self._bot_message(params, action="edit")
        if "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        self._edited(message, plain, entities, markup)
        parse_mode = params.get("parse_mode")
        replied = message.get("reply_to_message")
        self._record(
            SentMessage(
                method="editMessageText",
                chat_id=int(message["chat"]["id"]),
                message_id=int(message["message_id"]),
                text=text,
                parse_mode=str(parse_mode) if parse_mode else None,
                reply_markup=copy.deepcopy(markup),
                reply_to_message_id=int(replied["message_id"]) if replied else None,
                plain_text=plain,
                entities=copy.deepcopy(entities),
            )
        )
        return copy.deepcopy(message)

    def _edit_message_reply_markup(self, params: JsonDict) -> JsonDict:
        markup = self._reply_markup(params)
        message = self._bot_message(params, action="edit")
        self._edited(
            message, str(message.get("text", "")), list(message.get("entities") or []), markup
        )
        return copy.deepcopy(message)

    def _answer_callback_query(self, params: JsonDict) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._open_queries:
            raise ApiError(400, QUERY_TOO_OLD)
        text = params.get("text")
        if text is not None and len(str(text)) > MAX_CALLBACK_ANSWER_LENGTH:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        del self._open_queries[query_id]
        answer: JsonDict = {
            **params,
            "callback_query_id": query_id,
            "text": None if text is None else str(text),
            "show_alert": _as_bool(params.get("show_alert", False)),
        }
        self.callback_answers.append(answer)
        return True

    def _delete_message(self, params: JsonDict) -> bool:
        message = self._bot_message(params, action="delete")
        del self._messages[int(message["chat"]["id"])][int(message["message_id"])]
        return True

    def _delete_messages(self, params: JsonDict) -> bool:
        chat = self._resolve_chat(params.get("chat_id"))
        ids = params.get("message_ids")
        if not isinstance(ids, list) or not ids:
            raise ApiError(400, "Bad Request: message_ids is empty")
        messages = self._messages.get(int(chat["id"]), {})
        for message_id in ids:
            messages.pop(_as_int(message_id, "message_ids"), None)
        return True

    def _send_chat_action(self, params: JsonDict) -> bool:
        self._resolve_chat(params.get("chat_id"))
        if str(params.get("action") or "") not in CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    def _get_chat(self, params: JsonDict) -> JsonDict:
        value = params.get("chat_id")
        try:
            chat_id = _as_int(value, "chat_id")
        except ApiError:
            chat_id = None
        if chat_id is not None and chat_id not in self._chats:
            raise ApiError(400, "Bad Request: chat not found")
        chat = self._resolve_chat(value)
        return {
            **copy.deepcopy(chat),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }
