"""Who is free, end to end: a name that fits many, online marks, and the question before a
transfer to an operator who is offline — the real bot, the fake Bot API, the portal simulator.
"""

from __future__ import annotations

import pytest

from bot.sandbox.portal import PortalSimulator, SimOperator
from handlers.keyboards import ConfirmTap, PageTap, TargetTap
from tests.conftest import ANNA, BOB, PAVEL, SUPPORT, make_portal
from tests.harness import CONFIG_YAML, OLGA, running_bot

USER_GET = "user.get"
OK = ConfirmTap().pack()
MORE = PageTap(page=1).pack()


def crowd(count: int = 18) -> tuple[PortalSimulator, str]:
    """A portal and a directory with ``count`` more operators, "Operator 1" … (IDs 101 …);
    the even ones are signed out."""
    portal = make_portal()
    lines = []
    for i in range(1, count + 1):
        portal.operators[100 + i] = SimOperator(100 + i, f"Operator {i}", online=i % 2 == 1)
        lines.append(f"  - {{key: op{i}, bitrix_id: {100 + i}, name: Operator {i}}}\n")
    return portal, CONFIG_YAML.replace("queues:\n", "".join(lines) + "queues:\n")


def asked(portal: PortalSimulator) -> list[list[int]]:
    """The user IDs each user.get asked about."""
    return [[int(i) for i in call.params["FILTER"]["ID"]] for call in portal.calls_to(USER_GET)]


# ---- a name that fits many -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "text", "more", "back", "cancel", "done"),
    [
        ("en", "«Operator» fits 18 people. Pick one:", "More »", "« Back", "Cancel", "✅ Dialog"),
        (
            "ru",
            "Под «Operator» подходят несколько сотрудников (18). Кого выбрать?",
            "Ещё »",
            "« Назад",
            "Отмена",
            "✅ Диалог",
        ),
    ],
)
async def test_a_name_that_fits_eighteen_pages_by_six(
    language: str, text: str, more: str, back: str, cancel: str, done: str
) -> None:
    portal, yaml_text = crowd()
    async with running_bot(portal, yaml_text=yaml_text) as h:
        question = await h.say("/transfer 2043 Operator", language=language)
        assert question.plain_text == text, "one short line: the names are on the buttons"
        assert h.labels(question) == [
            "🟢 Operator 1",
            "⚪ Operator 2",
            "🟢 Operator 3",
            "⚪ Operator 4",
            "🟢 Operator 5",
            "⚪ Operator 6",
            more,
            cancel,
        ]
        assert asked(portal) == [[101, 102, 103, 104, 105, 106]], "the six shown, one call"

        await h.tap(question, MORE, language=language)
        assert h.labels(question) == [
            "🟢 Operator 7",
            "⚪ Operator 8",
            "🟢 Operator 9",
            "⚪ Operator 10",
            "🟢 Operator 11",
            "⚪ Operator 12",
            back,
            more,
            cancel,
        ]
        assert h.now(question).plain_text == text
        assert asked(portal)[1:] == [[107, 108, 109, 110, 111, 112]]
        await h.tap(h.now(question), PageTap(page=2).pack(), language=language)
        assert h.labels(question)[:6] == [
            "🟢 Operator 13",
            "⚪ Operator 14",
            "🟢 Operator 15",
            "⚪ Operator 16",
            "🟢 Operator 17",
            "⚪ Operator 18",
        ]
        assert more not in h.labels(question)
        assert h.rest_calls() == [], "paging moves nothing"

        # Anna was never offered here: refused, nothing sent
        anna = TargetTap(kind="o", id=ANNA).pack()
        refused = await h.tap(h.now(question), anna, language=language, check_button=False)
        not_valid = {
            "en": "This button is not valid any more.",
            "ru": "Эта кнопка больше не действует.",
        }
        assert refused["text"] == not_valid[language]
        assert h.rest_calls() == []
        # Operator 14 is marked offline: the tap is informed, no second question
        await h.tap(h.now(question), TargetTap(kind="o", id=114).pack(), language=language)
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": 114}]
        assert h.now(question).plain_text.startswith(f"{done} 2043")
        assert h.now(question).reply_markup is None


async def test_a_name_that_fits_a_few_has_no_more_button() -> None:
    portal, yaml_text = crowd(3)
    async with running_bot(portal, yaml_text=yaml_text) as h:
        question = await h.say("/transfer 2043 operator")
        assert question.plain_text == "«operator» fits 3 people. Pick one:"
        assert h.labels(question) == ["🟢 Operator 1", "⚪ Operator 2", "🟢 Operator 3", "Cancel"]
        crafted = await h.tap(question, MORE, check_button=False)
        assert crafted["text"] == "This button is not valid any more."


async def test_a_reply_with_a_name_that_fits_many_pages_too() -> None:
    portal, yaml_text = crowd()
    async with running_bot(portal, yaml_text=yaml_text) as h:
        result = await h.say("/transfer 2044 2045 #sales")
        h.telegram.send_message(
            "/transfer operator", user_id=OLGA, reply_to_message_id=result.message_id
        )
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) == 2)
        which = h.telegram.messages_to(OLGA)[1]
        await h.tap(which, "d:2045")
        assert h.now(which).plain_text == "«operator» fits 18 people. Pick one:"
        assert h.labels(which)[-2:] == ["More »", "Cancel"]
        await h.tap(h.now(which), MORE)
        await h.tap(h.now(which), TargetTap(kind="o", id=107).pack())
        assert h.rest_calls()[-1] == {"CHAT_ID": 2045, "USER_ID": 107}


# ---- online marks ----------------------------------------------------------------------------


async def test_the_picker_marks_who_is_online_after_one_call_kept_a_minute() -> None:
    portal = make_portal()
    portal.operators[ANNA].online = False
    async with running_bot(portal) as h:
        picker = await h.say("/transfer 2043")
        assert h.labels(picker) == [
            "# Support line",  # queues are never marked
            "# Sales <line>",
            "⚪ Anna Smirnova",
            '🟢 Irina <Ira> & "Co"',
            "⚪ Pavel Orlov",
            "Cancel",
        ]
        assert asked(portal) == [[ANNA, 27, PAVEL]], "one call, for the operators shown"
        again = await h.say("/transfer 2044", language="ru")
        assert h.labels(again) == [
            "# Support line",
            "# Sales <line>",
            "🟢 Bob Lee",
            '🟢 Irina <Ira> & "Co"',
            "⚪ Pavel Orlov",
            "Отмена",
        ]
        assert asked(portal) == [[ANNA, 27, PAVEL], [BOB]], "only Bob was not known yet"
        await h.say("/transfer 2043")
        assert len(portal.calls_to(USER_GET)) == 2, "within the minute: no new call"
        # a button marked offline counts as informed: one tap transfers
        await h.tap(picker, TargetTap(kind="o", id=ANNA).pack())
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        assert h.now(picker).plain_text.startswith("✅ Dialog 2043")


@pytest.mark.parametrize("language", ["en", "ru"])
async def test_without_the_user_scope_no_marks_and_everything_works(language: str) -> None:
    portal = make_portal(scopes=["imopenlines"])
    portal.operators[BOB].online = False  # the bot cannot know
    async with running_bot(portal) as h:
        picker = await h.say("/transfer 2043", language=language)
        assert h.labels(picker)[2:5] == ["Anna Smirnova", 'Irina <Ira> & "Co"', "Pavel Orlov"]
        [refused] = portal.calls_to(USER_GET)
        assert refused.status == 403
        reply = await h.say("/transfer 2044 @bob", language=language)
        assert reply.plain_text.startswith("✅"), "presence unknown: no question"
        assert h.rest_calls() == [{"CHAT_ID": 2044, "USER_ID": BOB}]
        question = await h.say("/transfer 2043 @ana", language=language)
        assert h.labels(question)[0] == "Anna Smirnova"
        assert len(portal.calls_to(USER_GET)) == 1, "not asked again at every command"


# ---- offline: one question first ------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "question_text", "result"),
    [
        (
            "en",
            "⚪ Anna Smirnova is offline. Transfer dialog 2043 «Ivan Petrov — WhatsApp» anyway?",
            "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova",
        ),
        (
            "ru",
            "⚪ Оператор Anna Smirnova не в сети. Всё равно передать диалог 2043 "
            "«Ivan Petrov — WhatsApp»?",
            "✅ Диалог 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova",
        ),
    ],
)
async def test_a_typed_transfer_to_someone_offline_asks_first(
    language: str, question_text: str, result: str
) -> None:
    portal = make_portal()
    portal.operators[ANNA].online = False
    async with running_bot(portal) as h:
        question = await h.say("/transfer 2043 @anna", language=language)
        assert question.plain_text == question_text
        assert h.labels(question) == (
            ["✅ Transfer", "Cancel"] if language == "en" else ["✅ Передать", "Отмена"]
        )
        assert h.rest_calls() == [], "no transfer before the tap"
        assert portal.dialogs[2043].owner == BOB
        await h.tap(question, OK, language=language)
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        assert h.now(question).plain_text == result
        assert "2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova" in h.team_chat()[-1]
        assert len(portal.calls_to(USER_GET)) == 1


async def test_cancel_on_the_offline_question_sends_nothing() -> None:
    portal = make_portal()
    portal.operators[ANNA].online = False
    async with running_bot(portal) as h:
        question = await h.say("/transfer 2043 2045 @anna")
        assert question.plain_text.splitlines()[0] == (
            "⚪ Anna Smirnova is offline. Transfer 2 dialogs anyway?"
        )
        await h.tap(question, "no")
        assert h.now(question).plain_text == "Cancelled; nothing was changed."
        assert h.rest_calls() == []


async def test_nothing_to_move_asks_nothing() -> None:
    portal = make_portal()
    portal.operators[BOB].online = False
    async with running_bot(portal) as h:
        reply = await h.say("/transfer 2043 @bob")  # Bob holds it already
        assert reply.plain_text.startswith("☑️ Dialog 2043")
        assert h.rest_calls() == []


async def test_a_bulk_transfer_to_someone_offline_asks_once() -> None:
    portal = make_portal()
    portal.operators[ANNA].online = False
    async with running_bot(portal) as h:
        confirm = await h.say("/transfer 2043 2045 2046 @anna", language="ru")
        lines = confirm.plain_text.splitlines()
        assert lines[0] == "⚪ Оператор Anna Smirnova не в сети."
        assert lines[1].startswith("Передать")
        await h.tap(confirm, OK, language="ru")
        assert [c["CHAT_ID"] for c in h.rest_calls()] == [2043, 2045, 2046], "asked once"
        assert h.now(confirm).plain_text.count("✅") == 3


async def test_a_reply_typed_to_someone_offline_asks_after_the_dialog_is_chosen() -> None:
    portal = make_portal()
    portal.operators[BOB].online = False
    async with running_bot(portal) as h:
        result = await h.say("/transfer 2044 2046 #sales")
        h.telegram.send_message(
            "/transfer @bob", user_id=OLGA, reply_to_message_id=result.message_id
        )
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) == 2)
        which = h.telegram.messages_to(OLGA)[1]
        await h.tap(which, "d:2044")
        assert h.now(which).plain_text == (
            "⚪ Bob Lee is offline. Transfer dialog 2044 «Maria — Telegram» anyway?"
        )
        calls = len(h.rest_calls())
        await h.tap(h.now(which), OK)
        assert h.rest_calls()[calls:] == [{"CHAT_ID": 2044, "USER_ID": BOB}]


async def test_to_a_queue_nobody_asks_who_is_online() -> None:
    async with running_bot() as h:
        await h.say("/transfer 2043 #support")
        await h.say("/transfer 2044 queue:3")
        assert h.portal.calls_to(USER_GET) == []
        assert [c["QUEUE_ID"] for c in h.rest_calls()] == [SUPPORT, SUPPORT]
