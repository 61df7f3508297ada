"""/transfer end to end: real polling over HTTP, real REST calls to the portal simulator."""

from __future__ import annotations

import logging

import pytest

from bot.bitrix24.codes import KNOWN_CODES
from bot.messages import Messages
from bot.sandbox.portal import Fault
from tests.conftest import ANNA, BOB, SALES, SUPPORT, WEBHOOK_CODE, make_portal
from tests.harness import (
    CROWD,
    OLGA,
    OTHER_GROUP,
    PETR,
    STRANGER,
    TEAM_CHAT,
    TOKEN,
    UNLISTED_GROUP,
    running_bot,
    with_supervisors,
)

TRANSFER = "imopenlines.operator.transfer"
DIALOG_GET = "imopenlines.dialog.get"


def plain(html: str) -> str:
    """A message template as the user reads it (tags dropped, entities decoded)."""
    import html as html_lib
    import re

    return html_lib.unescape(re.sub(r"<[^>]+>", "", html))


async def test_transfer_to_an_operator() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer 2043 @anna")
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        # a look and is Anna online (asked once a minute)?, in one batch; then the transfer
        # with the look that verifies it, in another
        assert h.rest_calls(DIALOG_GET) == [{"CHAT_ID": 2043}, {"CHAT_ID": 2043}]
        batches = [c for c in h.portal.calls if not c.in_batch]
        assert [list(c.params["cmd"].values()) for c in batches] == [
            [f"{DIALOG_GET}?CHAT_ID=2043", "user.get?FILTER%5BID%5D%5B0%5D=15"],
            [f"{TRANSFER}?CHAT_ID=2043&USER_ID={ANNA}", f"{DIALOG_GET}?CHAT_ID=2043"],
        ]
        assert (
            reply.plain_text == "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova"
        )
        assert h.portal.dialogs[2043].owner == ANNA
        await h.settle()
        assert h.team_chat() == [
            "🔁 Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova, by Olga"
        ]


async def test_transfer_to_a_queue() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer 2043 #sales")
        assert h.rest_calls() == [{"CHAT_ID": 2043, "QUEUE_ID": SALES}]
        assert reply.plain_text == "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Sales <line>"


@pytest.mark.parametrize(
    "target",
    ["@anna", "anna", "ANNA", "@Anya", "anya", "@anna_s", "user:15", "Smirnova"],
)
async def test_every_spelling_of_an_operator_reaches_the_same_user_id(target: str) -> None:
    async with running_bot() as h:
        await h.say(f"/transfer 2043 {target}")
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]


@pytest.mark.parametrize("target", ["#support", "#SUP", "queue:sup", "queue:3", "support"])
async def test_every_spelling_of_a_queue_reaches_the_same_queue_id(target: str) -> None:
    async with running_bot() as h:
        await h.say(f"/transfer 2044 {target}")
        assert h.rest_calls() == [{"CHAT_ID": 2044, "QUEUE_ID": SUPPORT}]


async def test_dialog_forms_session_number_and_link() -> None:
    link = "https://portal.bitrix24.ru/online/?IM_HISTORY=imol%7C3568"
    async with running_bot() as h:
        question = await h.say(f"/transfer s3567 {link} #2045 @bob")
        assert h.rest_calls() == [], "three dialogs: nothing moves before the confirming tap"
        await h.tap(question, "ok")
        reply = h.now(question)
        assert h.rest_calls(DIALOG_GET)[:3] == [
            {"SESSION_ID": 3567},
            {"SESSION_ID": 3568},
            {"CHAT_ID": 2045},
        ]
        # 2043 is Bob's already: only two transfers go out
        assert sorted(c["CHAT_ID"] for c in h.rest_calls()) == [2044, 2045]
        assert reply.plain_text.splitlines() == [
            "☑️ Dialog 2043 «Ivan Petrov — WhatsApp» is already with Bob Lee; nothing to do.",
            "✅ Dialog 2044 «Maria — Telegram»: Anna Smirnova → Bob Lee",
            '✅ Dialog 2045 «Guest #17 — Live chat»: Irina <Ira> & "Co" → Bob Lee',
        ]
        await h.settle()
        assert len(h.team_chat()) == 1, "one announcement for one command"
        assert h.team_chat()[0].count("🔁") == 2


async def test_the_same_dialog_named_twice_is_moved_once() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer 2043 s3567 chat2043 @anna")
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        assert reply.plain_text.splitlines()[0].startswith("✅ Dialog 2043")


async def test_several_dialogs_each_get_their_own_result() -> None:
    async with running_bot() as h:
        await h.tap(await h.say("/transfer 2043 9999 2044 @anna"), "ok")
        lines = h.telegram.messages_to(OLGA)[-1].plain_text.splitlines()
        assert lines[0].startswith("✅ Dialog 2043")
        assert lines[1].startswith("❌ Dialog 9999: No such dialog")
        assert lines[2].startswith("☑️ Dialog 2044")
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]


async def test_unknown_name_suggests_and_calls_nothing() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer 2043 @ana")
        assert reply.plain_text == "I don't know «@ana». Did you mean @anna (Anna Smirnova)?"
        # nothing but the read of who is online, for the button's mark
        assert [(c.method, c.params) for c in h.portal.calls] == [
            ("user.get", {"FILTER": {"ID": [ANNA]}})
        ]


@pytest.mark.parametrize(
    ("text", "first_line"),
    [
        ("/transfer", "Which dialog, and to whom?"),
        ("/transfer @anna", "Which dialog? Put its number before the name."),
        ("/transfer abc @anna", "«abc» is not a dialog number."),
        (
            "/transfer 2043 <b>x</b>",
            "2043 → ?: «<b>x</b>» is not a name (use @name, #queue, user:15 or queue:3).",
        ),
        (
            "/transfer " + " ".join(str(n) for n in range(1, 23)) + " @anna",
            "Too many dialogs in one command: 20 at most.",
        ),
    ],
)
async def test_malformed_commands_get_usage_and_call_nothing(text: str, first_line: str) -> None:
    async with running_bot() as h:
        reply = await h.say(text)
        lines = reply.plain_text.splitlines()
        assert lines[0] == first_line
        assert "Example: /transfer 2043 @anna" in lines
        assert h.portal.calls == []


async def test_non_supervisor_is_refused_with_their_id() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer 2043 @anna", user=STRANGER)
        assert reply.plain_text == (
            "Sorry, you are not on this bot's supervisors list. "
            f"Ask @it_ops to add your Telegram ID {STRANGER}."
        )
        assert h.portal.calls == []


async def test_stranger_in_an_unlisted_group_gets_silence() -> None:
    async with running_bot() as h:
        h.telegram.send_message("/transfer 2043 @anna", user_id=STRANGER, chat_id=UNLISTED_GROUP)
        await h.say("/help")  # handled after the group message
        await h.settle()
        assert h.telegram.messages_to(UNLISTED_GROUP) == []
        assert h.portal.calls == []


async def test_supervisor_in_an_unlisted_group_is_told_the_chat_id() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer 2043 @anna", chat=UNLISTED_GROUP)
        assert str(UNLISTED_GROUP) in reply.plain_text
        assert h.portal.calls == []


async def test_group_command_with_the_bot_name_works_and_is_a_reply() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer@handoff_test_bot 2043 @anna", user=PETR, chat=OTHER_GROUP)
        assert reply.reply_to_message_id is not None
        assert reply.plain_text.startswith("✅ Dialog 2043")
        await h.settle()
        assert h.team_chat() == [
            "🔁 Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova, by Petr"
        ]


async def test_command_for_another_bot_is_ignored() -> None:
    async with running_bot() as h:
        h.telegram.send_message("/transfer@other_bot 2043 @anna", user_id=PETR, chat_id=OTHER_GROUP)
        await h.say("/help")
        await h.settle()
        assert h.telegram.messages_to(OTHER_GROUP) == []
        assert h.portal.calls == []


async def test_in_the_team_chat_the_reply_is_the_announcement() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer 2043 @anna", chat=TEAM_CHAT)
        await h.settle()
        assert h.team_chat() == [reply.plain_text], "no second message in the team chat"


async def test_failed_announcement_does_not_hide_the_result() -> None:
    async with running_bot() as h:
        h.telegram.fail(
            "sendMessage", status=403, description="Forbidden: bot was kicked", chat_id=TEAM_CHAT
        )
        reply = await h.say("/transfer 2043 @anna")
        await h.settle()
        # the result comes at once; the note follows when the team chat refused
        assert h.now(reply).plain_text.splitlines() == [
            "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova",
            "Transferred, but the team chat was not notified.",
        ]
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]


async def test_failure_is_not_announced() -> None:
    async with running_bot() as h:
        question = await h.say("/transfer 2043 @pavel")  # on leave: offline, asked first
        await h.tap(question, "ok")
        assert h.now(question).plain_text.startswith("❌ Bitrix24 accepted the transfer")
        await h.settle()
        assert h.team_chat() == []


ERROR_CODES = [
    k
    for k in KNOWN_CODES
    if k.method in ("*", TRANSFER)
    and k.code not in ("QUERY_LIMIT_EXCEEDED", "INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER")
]


# a method's own refusals come inside the batch, next to the look; the rest fail the request
INNER = {"OPERATION_TIME_LIMIT"} | {k.code for k in KNOWN_CODES if k.method == TRANSFER}


def refusal(code: str, status: int | None) -> Fault:
    """The portal's answer to the transfer-and-look batch when the transfer gets ``code``."""
    if code not in INNER:
        return Fault.error(code, status=status)
    error = {"error": code, "error_description": "as the portal words it"}
    return Fault.json(200, {"result": {"result": [], "result_error": {"c0": error}}})


@pytest.mark.parametrize("known", ERROR_CODES, ids=lambda k: f"{k.code}-{k.status}")
async def test_each_bitrix_error_reaches_the_user_in_plain_words(known: object) -> None:
    from bot.bitrix24.codes import KnownCode

    assert isinstance(known, KnownCode)
    portal = make_portal()
    portal.inject("batch", refusal(known.code, known.status), carrying=TRANSFER)
    async with running_bot(portal) as h:
        reply = await h.say("/transfer 2043 @anna")
        status = 400 if known.code in INNER else known.status
        friendly = plain(Messages(admin_contact="@it_ops").error(known.code, status, "en"))
        assert reply.plain_text == f"❌ Dialog 2043 «Ivan Petrov — WhatsApp»: {friendly}"
        assert len(portal.requests_carrying(TRANSFER)) == 1


async def test_russian_speaker_gets_russian() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer 9999 @anna", language="ru")
        assert reply.plain_text.startswith("❌ Диалог 9999: Такого диалога нет")


async def test_portal_timeout_says_nothing_changed() -> None:
    portal = make_portal()
    # the look, alone or beside "is Anna online?"
    portal.inject(DIALOG_GET, Fault.delay(10, apply=False), times=20)
    portal.inject("batch", Fault.delay(10, apply=False), times=20, carrying=DIALOG_GET)
    async with running_bot(portal, env={"TIMEOUT_S": "0.3", "DEADLINE_S": "1"}) as h:
        reply = await h.say("/transfer 2043 @anna")
        assert reply.plain_text == (
            "❌ Dialog 2043: Bitrix24 did not answer in time; nothing was changed. "
            "Try again in a minute. (TIMEOUT)"
        )
        assert h.rest_calls() == []


async def test_slow_transfer_that_landed_is_reported_once_as_success() -> None:
    portal = make_portal()
    portal.inject("batch", Fault.delay(10, apply=True), carrying=TRANSFER)
    async with running_bot(portal, env={"TIMEOUT_S": "0.5", "DEADLINE_S": "4"}) as h:
        reply = await h.say("/transfer 2043 @anna")
        assert reply.plain_text.startswith("✅ Dialog 2043")
        assert len(h.rest_calls()) == 1


async def test_no_secret_in_any_message_or_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    portal = make_portal()
    portal.inject("batch", Fault.error("NO_AUTH_FOUND"), carrying=TRANSFER)
    portal.inject("batch", Fault.proxy_page(502), carrying="user.get")
    async with running_bot(portal) as h:
        for text in (
            "/transfer 2043 @anna",
            "/transfer 2044 @bob",
            "/transfer 9999 @anna",
            "/help",
            "/operators",
        ):
            await h.say(text)
        await h.settle()
        sent = [call.params for call in h.telegram.calls]
    everything = repr(sent) + "\n".join(r.getMessage() for r in caplog.records)
    assert WEBHOOK_CODE not in everything
    assert TOKEN.split(":")[1] not in "\n".join(r.getMessage() for r in caplog.records)


async def test_burst_of_100_commands_against_the_leaky_bucket() -> None:
    portal = make_portal(leak_per_s=100.0, burst=20)
    for n in range(3000, 3100):
        portal.dialogs[n] = type(portal.dialogs[2043])(
            n, n + 10000, f"Guest {n}", owner=BOB, line_id=SUPPORT
        )
    env = {"RATE": "100", "BURST": "20", "DEADLINE_S": "15"}
    async with running_bot(portal, env=env, yaml_text=with_supervisors(100)) as h:
        for i, n in enumerate(range(3000, 3100)):
            h.telegram.send_message(f"/transfer {n} @anna", user_id=CROWD + i)
        chats = [CROWD + i for i in range(100)]
        await h.telegram.wait_for(lambda: all(h.messages_in(c) for c in chats), timeout=60)
        await h.settle()
        replies = [m for c in chats for m in h.telegram.messages_to(c)]
        assert len(replies) == 100, "one reply per command"
        assert all(r.plain_text.startswith("✅") for r in replies), [
            r.plain_text for r in replies if not r.plain_text.startswith("✅")
        ][:3]
        assert not any("QUERY_LIMIT_EXCEEDED" in r.plain_text for r in replies)
        moved = sorted(c["CHAT_ID"] for c in h.rest_calls())
        assert moved == list(range(3000, 3100)), "each dialog transferred exactly once"
        assert all(h.portal.dialogs[n].owner == ANNA for n in range(3000, 3100))
        # the team chat heard of all 100, in a few messages rather than a storm
        team = "\n".join(h.team_chat_now())
        assert all(f"Dialog {n}" in team for n in range(3000, 3100))


async def test_two_supervisors_moving_one_dialog_at_once_make_one_transfer() -> None:
    portal = make_portal()
    # keep the first one in flight
    portal.inject("batch", Fault.delay(0.3, apply=True), carrying=TRANSFER)
    async with running_bot(portal) as h:
        h.telegram.send_message("/transfer 2043 @anna", user_id=OLGA)
        h.telegram.send_message("/transfer 2043 @anna", user_id=PETR, first_name="Petr")
        await h.telegram.wait_for(
            lambda: bool(h.telegram.messages_to(OLGA)) and bool(h.telegram.messages_to(PETR))
        )
        texts = sorted(
            m.plain_text.split()[0]
            for m in (*h.telegram.messages_to(OLGA), *h.telegram.messages_to(PETR))
        )
        assert texts == ["☑️", "✅"], "one moved it, the other is told it is already there"
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]


async def test_a_long_reply_is_split_not_lost() -> None:
    portal = make_portal()
    for n in range(4000, 4020):
        portal.dialogs[n] = type(portal.dialogs[2043])(
            n, n + 10000, "A very long customer name " * 10, owner=BOB, line_id=SUPPORT
        )
    async with running_bot(portal) as h:
        question = await h.say(  # Pavel is on leave: the portal drops every one of them
            "/transfer " + " ".join(str(n) for n in range(4000, 4020)) + " @pavel"
        )
        await h.tap(question, "ok")
        results = [m for m in h.telegram.messages_to(OLGA) if "❌" in m.plain_text]
        lines = [line for m in results for line in m.plain_text.splitlines()]
        assert len(results) >= 2
        assert len(lines) == 20
        assert all(
            line.startswith("❌ Bitrix24 accepted the transfer, but dialog 40") for line in lines
        )
        assert all(len(m.text) <= 4096 for m in results)


async def test_a_bug_in_a_handler_still_gets_an_answer() -> None:
    from aiogram import Router
    from aiogram.filters import Command

    async def broken(_: object) -> None:
        raise RuntimeError("a bug")

    router = Router()
    router.message.register(broken, Command("broken"))
    async with running_bot(extra_router=router) as h:
        # /broken is not one of ours: the bot's private catch-all answers it, so plant the
        # bug where no other handler looks: in a listed group, where unknown commands are ignored
        reply = await h.say("/broken", chat=OTHER_GROUP)
        assert reply.plain_text.startswith("Something went wrong inside the bot.")
