"""The fake Telegram Bot API, proven against the real aiogram client over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeChat,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
)

from bot.sandbox.telegram import (
    NOT_MODIFIED,
    FakeTelegram,
    FakeTelegramTimeout,
    HtmlParseError,
    LocalAiohttpSession,
    TelegramLimits,
    parse_telegram_html,
)

USER = 42
GROUP = -1001234567890


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    """A real aiogram Bot on the fake (its session only skips aiogram's 250 ms close pause)."""
    bot = tg.make_bot()
    yield bot
    await bot.session.close()


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=d.title(), callback_data=d) for d in data]]
    )


async def test_get_me_with_a_plain_aiogram_session(tg: FakeTelegram) -> None:
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
    bot = Bot(tg.token, session=session)
    try:
        me = await bot.get_me()
    finally:
        await bot.session.close()
    assert (me.id, me.is_bot, me.username, me.first_name) == (
        1234,
        True,
        "handoff_test_bot",
        "Handoff bot",
    )
    assert [c.method for c in tg.calls] == ["getMe"]
    assert tg.calls[0].ok


async def test_send_html_with_keyboard_then_edit(tg: FakeTelegram, bot: Bot) -> None:
    tg.send_message("hi", user_id=USER, first_name="Ann")
    sent = await bot.send_message(
        USER,
        "<b>Dialog #2043</b> &lt;Ann&gt; &amp; co",
        parse_mode="HTML",
        reply_markup=keyboard("take", "skip"),
    )
    assert sent.message_id == 2  # the user's message was #1 in this chat
    assert sent.chat.id == USER and sent.chat.type == "private" and sent.chat.first_name == "Ann"
    assert sent.from_user is not None and sent.from_user.is_bot
    assert sent.text == "Dialog #2043 <Ann> & co"
    assert sent.entities is not None and sent.entities[0].type == "bold"
    assert (sent.entities[0].offset, sent.entities[0].length) == (0, 12)
    assert sent.reply_markup is not None
    assert sent.reply_markup.inline_keyboard[0][0].callback_data == "take"

    [record] = tg.messages_to(USER)
    assert record.method == "sendMessage"
    assert record.text == "<b>Dialog #2043</b> &lt;Ann&gt; &amp; co"
    assert record.plain_text == "Dialog #2043 <Ann> & co"
    assert record.parse_mode == "HTML"
    assert record.button_data() == ["take", "skip"]
    assert tg.calls[-1].params["chat_id"] == USER  # decoded from the form's "42"
    assert tg.calls[-1].params["reply_markup"]["inline_keyboard"][0][1]["callback_data"] == "skip"

    edited = await bot.edit_message_text(
        "<i>taken</i>", chat_id=USER, message_id=sent.message_id, parse_mode="HTML"
    )
    assert isinstance(edited, Message)
    assert edited.text == "taken" and edited.edit_date is not None
    assert edited.reply_markup is None  # an edit without reply_markup drops the keyboard
    assert tg.sent[-1].method == "editMessageText" and tg.sent[-1].message_id == 2
    state = tg.get_message(USER, 2)
    assert state is not None and state["text"] == "taken"

    with pytest.raises(TelegramBadRequest) as not_modified:
        await bot.edit_message_text(
            "<i>taken</i>", chat_id=USER, message_id=sent.message_id, parse_mode="HTML"
        )
    assert not_modified.value.message == NOT_MODIFIED
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=USER, message_id=999)
    with pytest.raises(TelegramBadRequest, match="message can't be edited"):
        await bot.edit_message_text("x", chat_id=USER, message_id=1)

    markup = await bot.edit_message_reply_markup(
        chat_id=USER, message_id=2, reply_markup=keyboard("undo")
    )
    assert isinstance(markup, Message) and markup.reply_markup is not None
    assert await bot.delete_message(USER, 2)
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(USER, 2)


async def test_reply_to_and_group_chat(tg: FakeTelegram, bot: Bot) -> None:
    incoming = tg.send_message("/help@handoff_test_bot now", user_id=USER, chat_id=GROUP)
    assert incoming["chat"] == {"id": GROUP, "type": "supergroup", "title": "Test group"}
    assert incoming["entities"] == [{"type": "bot_command", "offset": 0, "length": 22}]
    reply = await bot.send_message(
        GROUP, "ok", reply_parameters=ReplyParameters(message_id=incoming["message_id"])
    )
    assert reply.chat.title == "Test group"
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.text == "/help@handoff_test_bot now"
    assert tg.sent[-1].reply_to_message_id == incoming["message_id"]
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(GROUP, "ok", reply_parameters=ReplyParameters(message_id=77))

    quoted = tg.send_message("thanks", user_id=USER, chat_id=GROUP, reply_to_message_id=2)
    assert quoted["reply_to_message"]["text"] == "ok"
    assert "reply_to_message" not in quoted["reply_to_message"]


async def test_commands_per_scope_and_language(tg: FakeTelegram, bot: Bot) -> None:
    scope = BotCommandScopeChat(chat_id=USER)
    commands = [
        BotCommand(command="start", description="Start"),
        BotCommand(command="help", description="Help"),
    ]
    assert await bot.set_my_commands(commands, scope=scope, language_code="ru")
    call = tg.calls[-1]
    assert call.params["scope"] == {"type": "chat", "chat_id": USER}
    assert call.params["language_code"] == "ru"
    assert call.params["commands"][0] == {"command": "start", "description": "Start"}

    got = await bot.get_my_commands(scope=scope, language_code="ru")
    assert [c.command for c in got] == ["start", "help"]
    assert await bot.get_my_commands() == []
    assert await bot.get_my_commands(scope=scope) == []
    assert tg.get_commands({"type": "chat", "chat_id": USER}, "ru")[1]["command"] == "help"

    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad-Name", description="x")])
    assert await bot.delete_my_commands(scope=scope, language_code="ru")
    assert await bot.get_my_commands(scope=scope, language_code="ru") == []


async def test_dispatcher_polls_messages_and_button_presses(tg: FakeTelegram, bot: Bot) -> None:
    router = Router()

    @router.message(F.text)
    async def echo(message: Message) -> None:
        await message.answer(
            f"echo: {message.text}",
            reply_markup=keyboard("again"),
        )

    @router.callback_query(F.data == "again")
    async def again(query: CallbackQuery) -> None:
        await query.answer("pressed", show_alert=True)

    dp = Dispatcher()
    dp.include_router(router)
    shown: list[str] = []
    tg.on_message = lambda m: shown.append(m.plain_text)
    polling = asyncio.create_task(
        dp.start_polling(bot, handle_signals=False, close_bot_session=False)
    )
    try:
        tg.send_message("hello", user_id=USER)
        [reply] = await tg.wait_for_messages(1, chat_id=USER)
        assert reply.text == "echo: hello"
        assert shown == ["echo: hello"]

        query_id = tg.press_button(reply.message_id, "again", user_id=USER)
        await tg.wait_for(lambda: bool(tg.callback_answers))
        [answer] = tg.callback_answers
        assert answer["callback_query_id"] == query_id
        assert answer["text"] == "pressed" and answer["show_alert"] is True
        await tg.wait_for(lambda: tg.pending_updates == 0)
        allowed = tg.calls_to("getUpdates")[-1].params["allowed_updates"]
        assert set(allowed) == {"message", "callback_query"}
    finally:
        await dp.stop_polling()
        await asyncio.wait_for(polling, 2)
    assert polling.done() and polling.exception() is None


async def test_answering_unknown_or_answered_query_fails(tg: FakeTelegram, bot: Bot) -> None:
    tg.send_message("hi", user_id=USER)
    sent = await bot.send_message(USER, "choose", reply_markup=keyboard("a"))
    with pytest.raises(ValueError, match="no button with callback_data 'b'"):
        tg.press_button(sent.message_id, "b", user_id=USER)
    query_id = tg.press_button(sent.message_id, "a", user_id=USER)
    assert await bot.answer_callback_query(query_id)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query_id)


async def test_malformed_html_and_bad_text_are_refused(tg: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest) as unescaped:
        await bot.send_message(USER, "Operator <Olga> took it", parse_mode="HTML")
    assert unescaped.value.message == (
        'Bad Request: can\'t parse entities: Unsupported start tag "olga" at byte offset 9'
    )
    with pytest.raises(TelegramBadRequest) as unclosed:
        await bot.send_message(USER, "<b>Dialog", parse_mode="HTML")
    assert unclosed.value.message == (
        "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\""
    )
    with pytest.raises(TelegramBadRequest, match='can\'t parse entities: Unescaped "&"'):
        await bot.send_message(USER, "Tom & Jerry", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest) as empty:
        await bot.send_message(USER, "")
    assert empty.value.message == "Bad Request: message text is empty"
    with pytest.raises(TelegramBadRequest) as too_long:
        await bot.send_message(USER, "x" * 4097)
    assert too_long.value.message == "Bad Request: message is too long"
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(USER, "x", reply_markup=keyboard("d" * 65))
    assert tg.sent == []
    assert [c.status for c in tg.calls] == [400] * 6
    assert await bot.send_message(USER, "x" * 4096)  # the limit itself is fine


async def test_fault_injection_429(tg: FakeTelegram, bot: Bot) -> None:
    tg.fail("sendMessage", status=429, retry_after=7)
    with pytest.raises(TelegramRetryAfter) as error:
        await bot.send_message(USER, "hi")
    assert error.value.retry_after == 7
    assert tg.calls[-1].response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }
    assert tg.sent == []
    assert (await bot.send_message(USER, "hi")).text == "hi"  # only the next call failed

    tg.fail(
        "sendMessage", status=403, description="Forbidden: bot was blocked by the user", chat_id=7
    )
    assert await bot.send_message(USER, "other chats still work")
    with pytest.raises(Exception, match="bot was blocked"):
        await bot.send_message(7, "blocked")


async def test_wrong_token_and_unknown_method(tg: FakeTelegram) -> None:
    stranger = Bot("987654321:WRONG_token", session=LocalAiohttpSession(api=tg.api_server))
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await stranger.get_me()
    finally:
        await stranger.session.close()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{tg.base_url}/bot{tg.token}/noSuchMethod") as response:
            assert response.status == 404
            assert await response.json() == {
                "ok": False,
                "error_code": 404,
                "description": "Not Found",
            }
        async with http.get(f"{tg.base_url}/elsewhere") as response:
            assert response.status == 404


async def test_long_poll_wakes_on_an_update_and_offset_confirms(tg: FakeTelegram, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for(lambda: bool(tg.calls_to("getUpdates")))
    await asyncio.sleep(0.05)
    assert not poll.done()
    tg.send_message("wake up", user_id=USER)
    updates = await asyncio.wait_for(poll, 1)
    assert [u.message.text for u in updates if u.message] == ["wake up"]
    assert tg.pending_updates == 1  # not confirmed yet
    assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == []
    assert tg.pending_updates == 0


async def test_newer_poll_terminates_older_with_409(tg: FakeTelegram, bot: Bot) -> None:
    older = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for(lambda: bool(tg.calls_to("getUpdates")))
    newer = asyncio.create_task(bot.get_updates(timeout=5))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await asyncio.wait_for(older, 1)
    tg.send_message("hi", user_id=USER)
    assert len(await asyncio.wait_for(newer, 1)) == 1


async def test_close_returns_promptly_during_a_long_poll() -> None:
    tg = FakeTelegram()
    await tg.start()
    bot = Bot(tg.token, session=AiohttpSession(api=tg.api_server))
    try:
        poll = asyncio.create_task(bot.get_updates(timeout=30))
        await tg.wait_for(lambda: bool(tg.calls_to("getUpdates")))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(tg.close(), 3)
        assert loop.time() - started < 1.5
        with contextlib.suppress(Exception):
            await asyncio.wait_for(poll, 2)
        assert poll.done()
    finally:
        await bot.session.close()


async def test_wait_for_times_out_with_a_summary(tg: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(USER, "first")
    with pytest.raises(FakeTelegramTimeout) as error:
        await tg.wait_for_messages(2, chat_id=USER, timeout=0.1)
    assert isinstance(error.value, AssertionError) and isinstance(error.value, TimeoutError)
    assert "expected 2 message(s) to chat 42" in str(error.value)
    assert "'first'" in str(error.value)


@pytest.mark.parametrize(
    ("html", "error"),
    [
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("<b>x</b", "Unclosed end tag at byte offset 4"),
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ("<br/>", 'Unsupported start tag "br/" at byte offset 0'),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("<a href=x/>y</a>", "Unexpected end of name token at byte offset 8"),
        ("<b", "Unclosed start tag at byte offset 0"),
        ('<a href="x', "Unclosed start tag at byte offset 0"),
    ],
)
def test_html_errors_match_tdlib(html: str, error: str) -> None:
    with pytest.raises(HtmlParseError) as raised:
        parse_telegram_html(html)
    assert str(raised.value) == error


def test_html_entities_and_offsets() -> None:
    text, entities = parse_telegram_html(
        '😀 <b>Ann &amp; Bob</b> <a href="https://e.com/?a=1&amp;b=2">link</a> '
        '<pre><code class="language-python">x</code></pre> <span class="tg-spoiler">s</span>'
    )
    assert text == "😀 Ann & Bob link x s"
    assert entities == [
        {"type": "bold", "offset": 3, "length": 9},
        {"type": "text_link", "offset": 13, "length": 4, "url": "https://e.com/?a=1&b=2"},
        {"type": "pre", "offset": 18, "length": 1, "language": "python"},
        {"type": "spoiler", "offset": 20, "length": 1},
    ]
    assert parse_telegram_html("AT&T &#60;3 1 > 0") == ("AT&T <3 1 > 0", [])
    with pytest.raises(HtmlParseError, match='Unescaped ">"'):
        parse_telegram_html("1 > 0", strict=True)


# ------------------------------------------------------------------ flood limits


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def limited(clock: FakeClock) -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(limits=TelegramLimits(), clock=clock) as fake:
        yield fake


@pytest.fixture
async def limited_bot(limited: FakeTelegram) -> AsyncIterator[Bot]:
    bot = limited.make_bot()
    yield bot
    await bot.session.close()


def test_limits_defaults_and_validation() -> None:
    limits = TelegramLimits()
    assert (
        limits.per_second_overall,
        limits.per_chat_per_second,
        limits.chat_burst,
        limits.per_group_per_minute,
    ) == (30, 1, 3, 20)
    with pytest.raises(ValueError, match="per_chat_per_second"):
        TelegramLimits(per_chat_per_second=0)
    with pytest.raises(ValueError, match="chat_burst"):
        TelegramLimits(chat_burst=0)
    assert FakeTelegram().limits is None


async def test_within_limits_nothing_is_refused(
    limited: FakeTelegram, limited_bot: Bot, clock: FakeClock
) -> None:
    for i in range(10):  # one a second to a private chat and a group, and bursts of 3
        await limited_bot.send_message(USER, f"private {i}")
        await limited_bot.send_message(GROUP, f"group {i}")
        clock.advance(3.0)
    for chat in range(1, 4):
        for i in range(3):
            await limited_bot.send_message(chat, f"burst {i}")
    assert limited.flood_refusals == 0
    assert limited.messages_sent == len(limited.sent) == 29
    assert len(limited.message_times[USER]) == 10
    assert limited.message_times[USER][:2] == [1000.0, 1003.0]


async def test_private_chat_burst_then_429(
    limited: FakeTelegram, limited_bot: Bot, clock: FakeClock
) -> None:
    for i in range(3):
        await limited_bot.send_message(USER, f"burst {i}")
    with pytest.raises(TelegramRetryAfter) as error:
        await limited_bot.send_message(USER, "one too many")
    assert error.value.retry_after == 1
    assert limited.calls[-1].status == 429
    assert limited.calls[-1].response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    assert [m.text for m in limited.sent] == ["burst 0", "burst 1", "burst 2"]
    assert limited.get_message(USER, 4) is None
    assert (limited.flood_refusals, limited.messages_sent) == (1, 3)

    await limited_bot.send_message(USER + 1, "another chat is not throttled")
    clock.advance(0.5)  # half a token: still refused, with retry_after rounded up
    with pytest.raises(TelegramRetryAfter) as again:
        await limited_bot.send_message(USER, "one too many")
    assert again.value.retry_after == 1
    clock.advance(error.value.retry_after)
    sent = await limited_bot.send_message(USER, "one too many")
    assert sent.message_id == 4 and limited.sent[-1].text == "one too many"
    assert (limited.flood_refusals, limited.messages_sent) == (2, 5)


async def test_retry_after_rounds_up_the_wait(clock: FakeClock) -> None:
    limits = TelegramLimits(per_chat_per_second=0.4, chat_burst=1)
    async with FakeTelegram(limits=limits, clock=clock) as tg:
        bot = tg.make_bot()
        try:
            await bot.send_message(USER, "first")
            clock.advance(0.1)
            with pytest.raises(TelegramRetryAfter) as error:
                await bot.send_message(USER, "second")
            assert error.value.retry_after == 3  # 2.4 s rounded up
            clock.advance(2.4)
            assert await bot.send_message(USER, "second")
        finally:
            await bot.session.close()


async def test_group_twenty_messages_a_minute(
    limited: FakeTelegram, limited_bot: Bot, clock: FakeClock
) -> None:
    for i in range(20):  # 1.5 s apart: the per-chat bucket never runs dry
        await limited_bot.send_message(GROUP, f"group {i}")
        clock.advance(1.5)
    assert clock.now == 1030.0
    with pytest.raises(TelegramRetryAfter) as error:
        await limited_bot.send_message(GROUP, "21st")
    assert error.value.retry_after == 30  # the first left at 1000.0 leaves the window at 1060
    assert len(limited.messages_to(GROUP)) == 20
    clock.advance(29.5)
    with pytest.raises(TelegramRetryAfter) as almost:
        await limited_bot.send_message(GROUP, "21st")
    assert almost.value.retry_after == 1
    clock.advance(0.5)
    assert await limited_bot.send_message(GROUP, "21st")
    with pytest.raises(TelegramRetryAfter) as next_one:  # the 2nd (1001.5) is still in the window
        await limited_bot.send_message(GROUP, "22nd")
    assert next_one.value.retry_after == 2
    assert (limited.flood_refusals, limited.messages_sent) == (3, 21)


async def test_thirty_a_second_overall(
    limited: FakeTelegram, limited_bot: Bot, clock: FakeClock
) -> None:
    for chat in range(1, 31):
        await limited_bot.send_message(chat, "broadcast")
    with pytest.raises(TelegramRetryAfter) as error:
        await limited_bot.send_message(31, "broadcast")
    assert error.value.retry_after == 1
    assert limited.get_message(31, 1) is None and len(limited.sent) == 30
    clock.advance(error.value.retry_after)
    assert await limited_bot.send_message(31, "broadcast")
    assert (limited.flood_refusals, limited.messages_sent) == (1, 31)


async def test_edits_count_and_other_methods_do_not(
    limited: FakeTelegram, limited_bot: Bot, clock: FakeClock
) -> None:
    sent = await limited_bot.send_message(USER, "v1", reply_markup=keyboard("a"))
    await limited_bot.edit_message_text("v2", chat_id=USER, message_id=sent.message_id)
    await limited_bot.edit_message_reply_markup(
        chat_id=USER, message_id=sent.message_id, reply_markup=keyboard("b")
    )
    assert (limited.messages_sent, limited.edits) == (1, 2)
    with pytest.raises(TelegramRetryAfter):
        await limited_bot.edit_message_text("v3", chat_id=USER, message_id=sent.message_id)
    with pytest.raises(TelegramRetryAfter):
        await limited_bot.edit_message_reply_markup(chat_id=USER, message_id=sent.message_id)
    state = limited.get_message(USER, sent.message_id)
    assert state is not None and state["text"] == "v2"
    assert [m.text for m in limited.sent] == ["v1", "v2"]
    assert (limited.edits, limited.flood_refusals) == (2, 2)

    query_id = limited.press_button(sent.message_id, "b", user_id=USER)
    assert await limited_bot.answer_callback_query(query_id)
    assert await limited_bot.set_my_commands([BotCommand(command="start", description="Go")])
    assert await limited_bot.send_chat_action(USER, "typing")
    assert await limited_bot.get_updates(timeout=0)

    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await limited_bot.edit_message_text("x", chat_id=GROUP, message_id=99)
    assert limited.edits == 2  # a refused edit does not count either
    clock.advance(1.0)
    await limited_bot.edit_message_text("v3", chat_id=USER, message_id=sent.message_id)
    assert limited.edits == 3 and limited.sent[-1].text == "v3"


async def test_fail_429_still_works_with_limits(limited: FakeTelegram, limited_bot: Bot) -> None:
    limited.fail("sendMessage", status=429, retry_after=9)
    with pytest.raises(TelegramRetryAfter) as error:
        await limited_bot.send_message(USER, "hi")
    assert error.value.retry_after == 9
    assert limited.calls[-1].response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 9",
        "parameters": {"retry_after": 9},
    }
    assert limited.flood_refusals == 0 and limited.messages_sent == 0
    for i in range(3):  # the scripted refusal did not use up the burst
        await limited_bot.send_message(USER, f"burst {i}")
    assert limited.flood_refusals == 0


async def test_no_limits_by_default(tg: FakeTelegram, bot: Bot) -> None:
    for i in range(40):
        await bot.send_message(USER if i % 2 else GROUP, f"m{i}")
    sent = await bot.send_message(USER, "x")
    await bot.edit_message_text("y", chat_id=USER, message_id=sent.message_id)
    assert (tg.messages_sent, tg.edits, tg.flood_refusals) == (41, 1, 0)
