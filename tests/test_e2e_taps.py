"""One-thumb flows end to end: pickers, suggestions, confirmations, replies, /finish."""

from __future__ import annotations

import asyncio

import pytest

from bot.sandbox.portal import Fault, SimOperator
from handlers.keyboards import CancelTap, ConfirmTap, DialogTap, PageTap, TargetTap
from tests.conftest import ANNA, BOB, SALES, make_portal
from tests.harness import CONFIG_YAML, OLGA, OTHER_GROUP, PETR, STRANGER, TEAM_CHAT, running_bot

TRANSFER = "imopenlines.operator.transfer"
FINISH = "imopenlines.operator.another.finish"
TO_ANNA = TargetTap(kind="o", id=ANNA).pack()
TO_BOB = TargetTap(kind="o", id=BOB).pack()
OK = ConfirmTap().pack()
CANCEL = CancelTap().pack()


async def test_picker_offers_queues_then_operators_without_the_holder() -> None:
    async with running_bot() as h:
        picker = await h.say("/transfer 2043")
        assert picker.plain_text == (
            "Dialog 2043 «Ivan Petrov — WhatsApp» is with Bob Lee. Move it to:"
        )
        assert h.labels(picker) == [
            "# Support line",
            "# Sales <line>",
            "🟢 Anna Smirnova",
            '🟢 Irina <Ira> & "Co"',
            "⚪ Pavel Orlov",  # inactive: never online
            "Cancel",
        ]
        assert h.rest_calls() == []
        answer = await h.tap(picker, TO_ANNA)
        assert answer["text"] == "Working…"
        result = h.now(picker)
        assert result.plain_text == (
            "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova"
        )
        assert result.reply_markup is None, "the keyboard disappears"
        assert h.messages_in(OLGA) == [picker.message_id], "edited in place, no new message"
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        assert h.team_chat() == [
            "🔁 Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova, by Olga"
        ]


async def test_picker_to_a_queue() -> None:
    async with running_bot() as h:
        picker = await h.say("/transfer 2043")
        await h.tap(picker, TargetTap(kind="q", id=SALES).pack())
        assert h.rest_calls() == [{"CHAT_ID": 2043, "QUEUE_ID": SALES}]


def many_operators(count: int) -> str:
    extra = "".join(
        f"  - {{key: op{i:02d}, bitrix_id: {100 + i}, name: Operator {i:02d}}}\n"
        for i in range(count)
    )
    return CONFIG_YAML.replace("queues:\n", extra + "queues:\n")


async def test_picker_pages_forward_and_back() -> None:
    portal = make_portal()
    for i in range(14):  # 2 queues + 3 operators + 14 = 19 targets: pages of 8, 8 and 3
        portal.operators[100 + i] = SimOperator(100 + i, f"Operator {i:02d}")
    async with running_bot(portal, yaml_text=many_operators(14)) as h:
        picker = await h.say("/transfer 2043")
        first = h.labels(picker)
        assert first[:2] == ["# Support line", "# Sales <line>"]
        assert "Next »" in first and "« Back" not in first
        await h.tap(picker, PageTap(page=1).pack())
        second = h.labels(picker)
        assert "« Back" in second and "Next »" in second
        assert not set(second) & set(first) - {"Next »", "Cancel"}
        await h.tap(h.now(picker), PageTap(page=2).pack())
        third = h.labels(picker)
        assert "Next »" not in third
        await h.tap(h.now(picker), PageTap(page=1).pack())
        assert h.labels(picker) == second
        await h.tap(h.now(picker), TargetTap(kind="o", id=110).pack())
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": 110}]


async def test_cancel_changes_nothing() -> None:
    async with running_bot() as h:
        picker = await h.say("/transfer 2043")
        await h.tap(picker, CANCEL)
        assert h.now(picker).plain_text == "Cancelled; nothing was changed."
        assert h.now(picker).reply_markup is None
        assert h.rest_calls() == []


async def test_expired_buttons_do_nothing() -> None:
    async with running_bot(env={"EXPIRY_MIN": "0.005"}) as h:  # 0.3 s
        picker = await h.say("/transfer 2043")
        await asyncio.sleep(0.5)
        answer = await h.tap(picker, TO_ANNA)
        assert answer["text"] == "These buttons have expired: send the command again."
        assert h.rest_calls() == []
        assert h.now(picker).plain_text.startswith("Dialog 2043")


async def test_only_supervisors_may_tap_in_a_group() -> None:
    async with running_bot() as h:
        picker = await h.say("/transfer 2043", user=PETR, chat=OTHER_GROUP)
        answer = await h.tap(picker, TO_ANNA, user=STRANGER, first_name="Eve")
        assert answer["show_alert"] is True
        assert answer["text"] == "Only the bot's supervisors can use these buttons."
        assert h.rest_calls() == []
        assert h.now(picker).reply_markup is not None, "the buttons still work for supervisors"
        await h.tap(picker, TO_ANNA, user=OLGA)
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]


async def test_a_double_tap_makes_one_rest_call() -> None:
    portal = make_portal()
    portal.inject("batch", Fault.delay(0.3, apply=True))  # keep the transfer in flight
    async with running_bot(portal) as h:
        picker = await h.say("/transfer 2043")
        answers = len(h.telegram.callback_answers)
        h.telegram.press_button(picker.message_id, TO_ANNA, user_id=OLGA)
        h.telegram.press_button(
            picker.message_id, TO_ANNA, user_id=PETR, chat_id=OLGA, check_button=False
        )
        await h.telegram.wait_for(lambda: len(h.telegram.callback_answers) >= answers + 2)
        await h.settle()
        texts = sorted(a.get("text", "") for a in h.telegram.callback_answers[answers:])
        assert texts == ["Already being done.", "Working…"]
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        assert portal.pending_faults == 0


async def test_did_you_mean_buttons_complete_the_command() -> None:
    async with running_bot() as h:
        question = await h.say("/transfer 2043 @ana")
        assert h.labels(question) == ["🟢 Anna Smirnova", "Cancel"]
        assert h.rest_calls() == []
        await h.tap(question, TO_ANNA)
        assert h.now(question).plain_text.startswith("✅ Dialog 2043")
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]


async def test_did_you_mean_for_many_dialogs_then_confirms() -> None:
    async with running_bot() as h:
        question = await h.say("/transfer 2043 2045 2046 @ana")
        await h.tap(question, TO_ANNA)
        confirm = h.now(question)
        assert confirm.plain_text.startswith("Transfer 3 dialogs to Anna Smirnova?")
        assert h.rest_calls() == []
        await h.tap(confirm, OK)
        assert len(h.rest_calls()) == 3


async def test_bulk_transfer_asks_once_showing_what_will_happen() -> None:
    async with running_bot() as h:
        confirm = await h.say("/transfer 2043 2045 2046 #sales")
        assert confirm.plain_text.splitlines() == [
            "Transfer 3 dialogs to Sales <line>?",
            "• 2043 «Ivan Petrov — WhatsApp» · Bob Lee",
            '• 2045 «Guest #17 — Live chat» · Irina <Ira> & "Co"',
            "• 2046 «Oleg — VK» · Support line",
        ]
        assert h.labels(confirm) == ["✅ Transfer", "Cancel"]
        assert h.rest_calls() == []
        await h.tap(confirm, OK)
        assert [c["CHAT_ID"] for c in h.rest_calls()] == [2043, 2045, 2046]
        assert h.now(confirm).plain_text.count("✅") == 3
        again = await h.tap(confirm, OK, check_button=False)  # the buttons are gone
        assert again["text"] == "This button is not valid any more."
        assert len(h.rest_calls()) == 3


async def test_two_dialogs_need_no_confirmation() -> None:
    async with running_bot() as h:
        await h.say("/transfer 2043 2045 @anna")
        assert len(h.rest_calls()) == 2


async def test_reply_to_a_result_acts_on_its_dialog() -> None:
    async with running_bot() as h:
        result = await h.say("/transfer 2043 @anna")
        h.telegram.send_message(
            "/transfer @bob", user_id=OLGA, reply_to_message_id=result.message_id
        )
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) == 2)
        second = h.telegram.messages_to(OLGA)[1]
        assert (
            second.plain_text == "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Anna Smirnova → Bob Lee"
        )
        assert h.rest_calls()[-1] == {"CHAT_ID": 2043, "USER_ID": BOB}


async def test_reply_to_an_error_about_a_dialog() -> None:
    async with running_bot() as h:
        question = await h.say("/transfer 2043 @pavel")  # on leave: offline, and the portal
        await h.tap(question, OK)  # drops the transfer
        error = h.now(question)
        assert error.plain_text.startswith("❌")
        h.telegram.send_message(
            "/transfer @anna", user_id=OLGA, reply_to_message_id=error.message_id
        )
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) == 2)
        assert h.rest_calls()[-1] == {"CHAT_ID": 2043, "USER_ID": ANNA}


async def test_reply_to_the_announcement_with_just_transfer_opens_the_picker() -> None:
    async with running_bot() as h:
        await h.say("/transfer 2043 @anna")
        await h.settle()
        [announcement] = h.telegram.messages_to(TEAM_CHAT)
        h.telegram.send_message(
            "/transfer",
            user_id=PETR,
            chat_id=TEAM_CHAT,
            reply_to_message_id=announcement.message_id,
        )
        await h.telegram.wait_for(lambda: len(h.messages_in(TEAM_CHAT)) == 2)
        picker = h.telegram.messages_to(TEAM_CHAT)[1]
        assert picker.plain_text.startswith("Dialog 2043 «Ivan Petrov — WhatsApp» is with Anna")
        assert "Anna Smirnova" not in h.labels(picker)


async def test_reply_to_a_message_about_several_dialogs_asks_which() -> None:
    async with running_bot() as h:
        result = await h.say("/transfer 2043 2045 @anna")
        h.telegram.send_message(
            "/transfer @bob", user_id=OLGA, reply_to_message_id=result.message_id
        )
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) == 2)
        question = h.telegram.messages_to(OLGA)[1]
        assert question.plain_text == "Which dialog?"
        assert h.labels(question) == [
            "2043 «Ivan Petrov — WhatsApp»",
            "2045 «Guest #17 — Live chat»",
            "Cancel",
        ]
        calls = len(h.rest_calls())
        await h.tap(question, DialogTap(chat=2045).pack())
        assert h.rest_calls()[calls:] == [{"CHAT_ID": 2045, "USER_ID": BOB}]
        assert h.now(question).plain_text.startswith("✅ Dialog 2045")


async def test_reply_to_a_message_that_is_not_the_bots_gets_usage() -> None:
    async with running_bot() as h:
        mine = h.telegram.send_message("hello", user_id=OLGA)
        await h.settle()
        h.telegram.send_message(
            "/transfer @bob", user_id=OLGA, reply_to_message_id=mine["message_id"]
        )
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) == 2)
        assert h.telegram.messages_to(OLGA)[1].plain_text.startswith("Which dialog?")
        assert h.rest_calls() == []


async def test_finish_after_a_confirming_tap() -> None:
    async with running_bot() as h:
        confirm = await h.say("/finish 2043")
        assert confirm.plain_text.splitlines() == [
            "Finish this dialog? The customer's session will be closed.",
            "• 2043 «Ivan Petrov — WhatsApp» · Bob Lee",
        ]
        assert h.labels(confirm) == ["🏁 Finish", "Cancel"]
        assert h.rest_calls(FINISH) == []
        await h.tap(confirm, OK)
        assert h.rest_calls(FINISH) == [{"CHAT_ID": 2043}]
        assert h.now(confirm).plain_text == (
            "🏁 Dialog 2043 «Ivan Petrov — WhatsApp» finished (it was with Bob Lee)."
        )
        assert h.team_chat() == [
            "🏁 Dialog 2043 «Ivan Petrov — WhatsApp» finished by Olga (it was with Bob Lee)"
        ]


async def test_finish_of_an_unknown_dialog_asks_nothing() -> None:
    async with running_bot() as h:
        reply = await h.say("/finish 9999")
        assert reply.plain_text.startswith("❌ Dialog 9999: No such dialog")
        assert reply.reply_markup is None
        assert h.rest_calls(FINISH) == []


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        ("CHAT_TYPE", 400, "not an open-line dialog"),
        ("ACCESS_DENIED", 400, "no rights on this dialog"),
        ("ACCESS_DENIED", 403, "plan does not include the REST API"),
    ],
)
async def test_finish_errors_in_plain_words(code: str, status: int, words: str) -> None:
    portal = make_portal()
    if status == 403:  # a system error fails the whole request
        portal.inject("batch", Fault.error(code, status=status))
    else:  # the method's own refusal comes inside the batch, next to the look
        error = {"error": code, "error_description": "as the portal words it"}
        portal.inject(
            "batch", Fault.json(200, {"result": {"result": [], "result_error": {"c0": error}}})
        )
    async with running_bot(portal) as h:
        confirm = await h.say("/finish 2043")
        await h.tap(confirm, OK)
        text = h.now(confirm).plain_text
        assert text.startswith("❌ Dialog 2043 «Ivan Petrov — WhatsApp»:")
        assert words in text and f"({code})" in text
        assert h.team_chat() == []


async def test_finish_by_replying_to_a_result() -> None:
    async with running_bot() as h:
        result = await h.say("/transfer 2043 @anna")
        h.telegram.send_message("/finish", user_id=OLGA, reply_to_message_id=result.message_id)
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) == 2)
        confirm = h.telegram.messages_to(OLGA)[1]
        await h.tap(confirm, OK)
        assert h.rest_calls(FINISH) == [{"CHAT_ID": 2043}]


async def test_menus_per_scope_and_language() -> None:
    async with running_bot() as h:
        await h.settle()

        def names(scope: str, lang: str) -> list[str]:
            commands = h.telegram.get_commands({"type": scope}, language_code=lang)
            return [c["command"] for c in commands]

        assert names("all_private_chats", "") == [
            "transfer",
            "finish",
            "history",
            "operators",
            "queues",
            "help",
            "reload",
        ]
        assert names("all_group_chats", "") == ["transfer", "finish", "history", "help"]
        assert names("all_group_chats", "ru") == ["transfer", "finish", "history", "help"]
        ru = h.telegram.get_commands({"type": "all_private_chats"}, language_code="ru")
        assert ru[0]["description"] == "Передать диалог: /transfer 2043 @anna"
