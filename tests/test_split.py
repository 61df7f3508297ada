"""Splitting and shortening replies: every piece is a message Telegram accepts.

Each piece is checked with the fake Bot API's port of TDLib's HTML parser (strict: a bare
``&`` or ``>`` is refused too), and measured after parsing as Telegram measures it.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import EditMessageText
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot.announcer import Announcer
from bot.replies import (
    RAW_FACTOR,
    TELEGRAM_LIMIT,
    html_size,
    shorten,
    split_message,
)
from bot.sandbox.telegram import MAX_MESSAGE_LENGTH, parse_telegram_html, utf16_length
from handlers.respond import replace, respond

ELLIPSIS = "…"


def parsed(chunk: str) -> tuple[str, list[dict[str, Any]]]:
    """The chunk as Telegram reads it; raises if Telegram would refuse its HTML."""
    return parse_telegram_html(chunk, strict=True)


def plain(chunk: str) -> str:
    return parsed(chunk)[0]


def assert_sendable(chunks: list[str], limit: int = TELEGRAM_LIMIT, raw: int | None = None) -> None:
    """Every chunk parses, fits ``limit`` UTF-16 units after parsing and ``raw`` raw chars,
    and (unless it is the only one) is not blank."""
    raw = RAW_FACTOR * limit if raw is None else raw
    for chunk in chunks:
        text = plain(chunk)
        assert utf16_length(text) <= limit, (utf16_length(text), chunk[:80])
        assert len(text.strip(" \t\r\n")) <= MAX_MESSAGE_LENGTH  # the fake's own rule
        assert len(chunk) <= raw
        assert html_size(chunk) == (utf16_length(text), len(chunk))
        if len(chunks) > 1:
            assert text.strip(), "a blank message is refused"


# ---- the cases of the issue ------------------------------------------------------------


def test_a_5000_character_name_in_bold_is_shortened_inside_the_tag() -> None:
    name = "N" * 5000
    text = f"❌ Dialog 2043: <b>{name}</b> is not an operator\nnext line"
    chunks = split_message(text)
    assert_sendable(chunks)
    assert len(chunks) == 2
    first, entities = parsed(chunks[0])
    prefix = "❌ Dialog 2043: "  # 15 characters
    assert first == prefix + "N" * (4096 - 15 - 1) + ELLIPSIS
    assert utf16_length(first) == TELEGRAM_LIMIT, "as much as fits, not less"
    assert entities == [{"type": "bold", "offset": 15, "length": 4096 - 15 - 1}]
    assert chunks[1] == "next line"


def test_5000_ampersands_are_cut_between_escapes_never_inside_one() -> None:
    text = "code: " + html.escape("&" * 5000)
    [chunk] = split_message(text)
    assert_sendable([chunk])
    assert chunk.endswith("&amp;…"), "whole escapes only"
    shown = plain(chunk)
    assert shown == "code: " + "&" * (len(shown) - 7) + ELLIPSIS
    # 16384 raw characters hold 3275 escaped ampersands, not 4096
    assert len(chunk) <= RAW_FACTOR * TELEGRAM_LIMIT < len("&amp;") * 4096


def test_emoji_count_twice_and_are_never_halved() -> None:
    text = "😀" * 3000
    [chunk] = split_message(text)
    assert_sendable([chunk])
    assert plain(chunk) == "😀" * 2047 + ELLIPSIS  # 2 * 2047 + 1 = 4095 units
    mixed = "a" + "😀" * 2100
    [chunk] = split_message(mixed)
    assert plain(chunk) == "a" + "😀" * 2047 + ELLIPSIS


def test_many_short_lines_are_cut_between_lines_only() -> None:
    lines = [f"• <code>{i}</code> «Guest &amp; {i}» · <i>Bob</i>" for i in range(1000)]
    chunks = split_message("\n".join(lines))
    assert_sendable(chunks)
    assert len(chunks) > 5
    assert "\n".join(chunks) == "\n".join(lines), "nothing lost, nothing changed"
    # each message is as full as the next line allows
    for chunk, after in itertools.pairwise(chunks):
        first_next = after.split("\n", 1)[0]
        assert html_size(chunk)[0] + 1 + html_size(first_next)[0] > TELEGRAM_LIMIT


def test_a_newline_inside_a_tag_is_not_a_place_to_cut() -> None:
    text = "top\n<b>one\ntwo</b>\nbottom"
    chunks = split_message(text, limit=8)
    assert_sendable(chunks, limit=8)
    assert chunks == ["top", "<b>one\ntwo</b>", "bottom"]


def test_a_tag_spanning_lines_that_is_too_long_is_shortened_and_closed() -> None:
    text = "<i>" + "\n".join(["abcdef"] * 10) + "</i>"
    chunks = split_message(text, limit=20)
    assert_sendable(chunks, limit=20)
    assert chunks == ["<i>abcdef\nabcdef\nabcde</i>…"]  # 19 units, and the ellipsis


def test_a_link_is_shortened_inside_its_text_and_keeps_its_address() -> None:
    link = '<a href="https://example.com/?a=1&amp;b=2">' + "x" * 50 + "</a>"
    short = shorten(link, limit=10, raw_limit=100)
    assert short == '<a href="https://example.com/?a=1&amp;b=2">' + "x" * 9 + "</a>…"
    _, entities = parsed(short)
    assert entities[0]["url"] == "https://example.com/?a=1&b=2"


def test_a_tag_that_does_not_fit_is_left_out_with_its_text() -> None:
    assert shorten("ab<b>" + "N" * 50 + "</b>", limit=10, raw_limit=8) == "ab…"
    assert shorten("<b>" + "N" * 50 + "</b>", limit=10, raw_limit=12) == "<b>NNNN</b>…"
    assert shorten("<b><i>NN</i></b>tail", limit=3, raw_limit=100) == "<b><i>NN</i></b>…"
    # the default raw bound (4 * 3) has no room for both tags and their end tags
    assert shorten("<b><i>NN</i></b>tail", limit=3) == "…"


def test_shortening_drops_spaces_before_the_ellipsis() -> None:
    assert shorten("word " + " " * 20 + "more", limit=10) == "word…"


def test_short_html_is_left_alone() -> None:
    assert shorten("<b>a &amp; b</b>") == "<b>a &amp; b</b>"
    assert split_message("a\nb") == ["a\nb"]
    assert split_message("") == [""]


def test_sizes_are_counted_as_telegram_counts_them() -> None:
    assert html_size("<b>a &amp; b</b>") == (5, 16)
    assert html_size("😀&#128512;") == (4, 10)
    assert html_size("&nbsp;") == (6, 6), "Telegram shows references it does not know as typed"


def test_blank_lines_do_not_start_a_message() -> None:
    chunks = split_message("x" * 10 + "\n\n  \n<b> </b>\n" + "y" * 10, limit=12)
    # the blank line that fits stays (Telegram trims it); those after the cut are dropped
    assert chunks == ["x" * 10 + "\n", "y" * 10]
    assert split_message("\n \n") == ["\n \n"], "a blank text is still one (blank) message"


def test_a_limit_with_no_room_for_the_ellipsis_is_refused() -> None:
    with pytest.raises(ValueError):
        split_message("abc", limit=0)


# ---- properties -------------------------------------------------------------------------

# text as the bot puts it into templates: anything, escaped; no newlines within a line
# (a skin tone and a combining accent alone too: a cut may fall next to them)
ALPHABET = st.sampled_from([*"ab yz&<>\"'—«»Ёж", "😀", "👍", "\U0001f3fd", "\u0301", "\t"])
WORDS = st.text(ALPHABET, max_size=40).map(lambda s: html.escape(s, quote=False))
TAGS = st.sampled_from(["b", "i", "u", "s", "code", "a"])


@st.composite
def fragments(draw: st.DrawFn, depth: int = 0) -> str:
    words = draw(WORDS)
    if depth >= 2 or not draw(st.booleans()):
        return words
    tag = draw(TAGS)
    inner = "".join(draw(st.lists(fragments(depth + 1), max_size=3)))
    start = '<a href="https://example.com/?x=1&amp;y=2">' if tag == "a" else f"<{tag}>"
    return f"{words}{start}{inner}</{tag}>"


LINES = st.lists(fragments(), min_size=1, max_size=4).map("".join)
TEXTS = st.lists(LINES, min_size=1, max_size=30)


def check_lines(chunks: list[str], lines: list[str], limit: int, raw_limit: int) -> None:
    """Every line shows whole, or shortened to a start of itself and "…"; only blank lines
    may be missing (those that would have started a message)."""
    shown = [line for chunk in chunks for line in plain(chunk).split("\n")]
    at = 0
    for line in lines:
        original = plain(line)
        whole = html_size(line)[0] <= limit and len(line) <= raw_limit
        if at < len(shown) and whole and shown[at] == original:
            at += 1
        elif at < len(shown) and not whole:
            assert shown[at].endswith(ELLIPSIS), (shown[at], original)
            assert original.startswith(shown[at][: -len(ELLIPSIS)])
            at += 1
        else:
            assert not original.strip(), f"lost: {original!r}"
    assert at == len(shown), "nothing added"


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.integers(min_value=1, max_value=120), st.sampled_from([None, 1, 2, 3, 10]))
def test_every_chunk_is_sendable_and_the_text_survives(
    lines: list[str], limit: int, factor: int | None
) -> None:
    raw_limit = None if factor is None else max(1, factor * limit)
    chunks = split_message("\n".join(lines), limit=limit, raw_limit=raw_limit)
    raw = RAW_FACTOR * limit if raw_limit is None else raw_limit
    assert_sendable(chunks, limit, raw)
    check_lines(chunks, lines, limit, raw)
    fits = all(html_size(line)[0] <= limit and len(line) <= raw for line in lines)
    if fits and all(plain(line).strip() for line in lines):
        assert "\n".join(chunks) == "\n".join(lines), "split between lines, nothing changed"


@given(TEXTS)
@settings(deadline=None)
def test_a_text_whose_html_fits_is_one_message_as_it_is(lines: list[str]) -> None:
    """What shows is never longer than the HTML: a text whose HTML fits the limits goes out
    whole, as written (the short replies skip the cutting, which this checks the long way)."""
    text = "\n".join(lines)
    units = len(text.encode("utf-16-le")) // 2
    limit, raw_limit = max(units, 1), max(len(text), 1)
    assume(2 * len(text) > limit)  # the cutting itself runs, not the shortcut
    assert split_message(text, limit=limit, raw_limit=raw_limit) == [text]


@settings(max_examples=300, deadline=None)
@given(LINES, st.integers(min_value=1, max_value=200), st.integers(min_value=1, max_value=400))
def test_shorten_keeps_the_start_and_the_entities(line: str, limit: int, raw_limit: int) -> None:
    short = shorten(line, limit, raw_limit)
    assert_sendable([short], limit, raw_limit)
    text, entities = parsed(short)
    original, original_entities = parsed(line)
    if short == line:
        return
    assert text.endswith(ELLIPSIS)
    assert original.startswith(text[: -len(ELLIPSIS)])
    # each entity kept is one of the original's, clipped where the text was cut
    for entity in entities:
        assert any(
            e["type"] == entity["type"]
            and e["offset"] == entity["offset"]
            and e["length"] >= entity["length"]
            for e in original_entities
        ), (entity, original_entities)


# ---- the team chat ----------------------------------------------------------------------


class Chat:
    """A poster that keeps what it was given, checked as the Bot API would."""

    def __init__(self) -> None:
        self.messages: dict[int, str] = {}

    async def send(self, chat_id: int, text: str) -> int:
        assert_sendable([text])
        self.messages[len(self.messages) + 1] = text
        return len(self.messages)

    async def edit(self, chat_id: int, message_id: int, text: str) -> None:
        assert_sendable([text])
        self.messages[message_id] = text


async def test_an_announcement_with_a_giant_name_is_shortened_not_cut_in_a_tag() -> None:
    chat = Chat()
    announcer = Announcer(-100, chat)
    line = "🔁 Dialog 2043: Bob → <b>" + html.escape("A&B " * 2000) + "</b>, by Olga"
    assert await announcer.announce(["first", line, "last"], ())
    await announcer.close()
    texts = [plain(t) for t in chat.messages.values()]
    assert texts[0] == "first"
    assert texts[1].startswith("🔁 Dialog 2043: Bob → A&B A&B")
    assert texts[1].endswith(ELLIPSIS)
    assert utf16_length(texts[1]) == TELEGRAM_LIMIT
    assert texts[2] == "last"


async def test_announcement_lines_are_measured_after_parsing() -> None:
    chat = Chat()
    announcer = Announcer(-100, chat, limit=25)
    lines = [f"<b>line</b> &amp; {n:02d}" for n in range(6)]  # 9 visible, 20 raw each
    assert await announcer.announce(lines, ())
    await announcer.close()
    assert [plain(t) for t in chat.messages.values()] == [
        "line & 00\nline & 01",
        "line & 02\nline & 03",
        "line & 04\nline & 05",
    ]


# ---- sending: respond and replace --------------------------------------------------------

KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[[InlineKeyboardButton(text="🔁 Try again", callback_data="re")]]
)
LONG = "\n".join(f"<b>{i:02d}</b> " + "x" * 300 for i in range(30))  # 303 each: 3 messages


@dataclass
class Chat_:
    type: str


@dataclass
class Sent:
    """A stand-in for the message the bot answers or edits; keeps what it was asked to do."""

    chat: Chat_
    calls: list[tuple[str, str, InlineKeyboardMarkup | None]] = field(default_factory=list)
    unchanged: bool = False

    async def answer(self, text: str, reply_markup: InlineKeyboardMarkup | None = None) -> Sent:
        self.calls.append(("answer", text, reply_markup))
        return self

    async def reply(self, text: str, reply_markup: InlineKeyboardMarkup | None = None) -> Sent:
        self.calls.append(("reply", text, reply_markup))
        return self

    async def edit_text(self, text: str, reply_markup: InlineKeyboardMarkup | None = None) -> Sent:
        self.calls.append(("edit", text, reply_markup))
        if self.unchanged:
            raise TelegramBadRequest(
                EditMessageText(text=text), "Bad Request: message is not modified: ..."
            )
        return self


@pytest.mark.parametrize(("chat", "how"), [("private", "answer"), ("group", "reply")])
async def test_respond_puts_the_keyboard_under_the_last_part(chat: str, how: str) -> None:
    message = Sent(Chat_(chat))
    await respond(cast(Message, message), LONG, KEYBOARD)
    assert [c[0] for c in message.calls] == [how] * 3
    assert [c[2] for c in message.calls] == [None, None, KEYBOARD]
    assert_sendable([c[1] for c in message.calls])
    assert "\n".join(c[1] for c in message.calls) == LONG


async def test_replace_edits_in_the_first_part_and_sends_the_rest() -> None:
    message = Sent(Chat_("private"))
    await replace(cast(Message, message), LONG, KEYBOARD)
    assert [(c[0], c[2]) for c in message.calls] == [
        ("edit", KEYBOARD),  # the keyboard stays on the tapped message
        ("answer", None),
        ("answer", None),
    ]
    assert "\n".join(c[1] for c in message.calls) == LONG


async def test_replace_sends_the_rest_when_the_first_part_reads_so_already() -> None:
    message = Sent(Chat_("private"), unchanged=True)
    await replace(cast(Message, message), LONG, KEYBOARD)
    assert [c[0] for c in message.calls] == ["edit", "answer", "answer"]
    await replace(cast(Message, message), "short")  # nothing to follow: done, no error
    assert message.calls[-1][0] == "edit"
